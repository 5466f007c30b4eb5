# reprorun's R client: parameters and logging for R code, inside `reprorun run` or not.
#
#   source(system("reprorun r-client", intern = TRUE))
#   cp <- rr_param("cp", 0.05)              # -P cp=0.02 on the command line, else 0.05
#   maxdepth <- rr_param("maxdepth", 3L)
#   rr_start_run()                          # the run reprorun started, or a new one
#   rr_log_metric("accuracy", 0.93)
#   rr_log_model(fit, "model")              # saveRDS + an MLmodel description
#   rr_end_run()                            # only ends a run this script created
#
# Where it logs: inside `reprorun run`, the run named by the environment (MLFLOW_RUN_ID) over
# the REST API at MLFLOW_TRACKING_URI (reprorun serves it for the run); elsewhere a new run,
# at the server named by MLFLOW_TRACKING_URI or REPRORUN_TRACKING_URI when that is http(s),
# else in reprorun's embedded store through the `reprorun` command (`reprorun log ...`).
# Needs the jsonlite and curl packages (Debian: r-cran-jsonlite, r-cran-curl).

.rr <- new.env(parent = emptyenv())
.rr$run_id <- NULL      # the run logged to
.rr$owned <- FALSE      # created here: rr_end_run (or the end of the script) ends it
.rr$params <- list()    # values rr_param returned, logged when the run starts
.rr$models <- list()    # models logged through the command (for their history tag)
.rr$logged <- character()  # parameters logged on the run
.rr$artifact_uri <- NULL

# --- parameters ------------------------------------------------------------------------------

#' The script's parameters from its command line: `-P key=value` (also `-Pkey=value`), bare
#' `key=value` (as in `Rscript train.R -P cp=0.02 maxdepth=5`) and `--key=value`.
rr_args <- function(args = commandArgs(trailingOnly = TRUE)) {
  found <- list()
  i <- 1
  while (i <= length(args)) {
    arg <- args[[i]]
    if (arg == "-P" && i < length(args)) {
      pair <- args[[i + 1]]
      i <- i + 2
    } else {
      pair <- sub("^(-P|--)", "", arg)
      i <- i + 1
    }
    eq <- regexpr("=", pair, fixed = TRUE)
    if (eq > 1) found[[substr(pair, 1, eq - 1)]] <- substring(pair, eq + 1)
  }
  found
}

#' Parameter `name`: the value on the command line cast to the type of `default`, else
#' `default`. `type` ("numeric", "integer", "logical", "character") overrides the guess.
rr_param <- function(name, default = NULL, type = NULL) {
  raw <- rr_args()[[name]]
  if (is.null(raw)) {
    if (is.null(default)) {
      stop(sprintf("rr_param: parameter '%s' has no value: pass -P %s=VALUE or give a default.",
                   name, name), call. = FALSE)
    }
    value <- default
    raw <- .rr_text(default)
  } else {
    value <- .rr_cast(name, raw, default, type)
  }
  .rr$params[[name]] <- raw
  if (!is.null(.rr$run_id)) .rr_log_pending_params()  # a run already started: log it now
  value
}

.rr_text <- function(value) {
  if (is.logical(value)) return(tolower(as.character(value)))
  if (is.numeric(value)) return(format(value, digits = 15, scientific = FALSE, trim = TRUE))
  as.character(value)
}

.rr_cast <- function(name, raw, default, type) {
  kind <- if (!is.null(type)) type else if (is.null(default)) "character" else class(default)[[1]]
  fail <- function(expected) {
    shown <- if (is.null(default)) "" else sprintf(" (like its default %s)", .rr_text(default))
    stop(sprintf("rr_param: parameter '%s' must be %s%s, got '%s'.", name, expected, shown, raw),
         call. = FALSE)
  }
  text <- trimws(raw)
  if (kind %in% c("integer", "int")) {
    if (!grepl("^[-+]?[0-9]+$", text)) fail("an integer")
    return(as.integer(text))
  }
  if (kind %in% c("numeric", "double", "float")) {
    number <- suppressWarnings(as.numeric(text))
    if (is.na(number) || !is.finite(number)) fail("a number")
    return(number)
  }
  if (kind %in% c("logical", "bool")) {
    lowered <- tolower(text)
    if (lowered %in% c("true", "t", "1", "yes")) return(TRUE)
    if (lowered %in% c("false", "f", "0", "no")) return(FALSE)
    fail("TRUE or FALSE")
  }
  raw
}

# --- transport: the REST API, or the reprorun command ----------------------------------------

.rr_server <- function() {
  for (name in c("MLFLOW_TRACKING_URI", "REPRORUN_TRACKING_URI")) {
    uri <- Sys.getenv(name)
    if (grepl("^https?://", uri)) return(sub("/+$", "", uri))
  }
  NULL
}

# One handle for the session: reset between requests, it keeps its connection open, so a
# training loop's metrics reuse one connection.
.rr_handle <- function(content_type = "application/json") {
  if (is.null(.rr$handle)) .rr$handle <- curl::new_handle() else curl::handle_reset(.rr$handle)
  handle <- .rr$handle
  headers <- list("Content-Type" = content_type)
  token <- Sys.getenv("MLFLOW_TRACKING_TOKEN")
  if (nzchar(token)) headers[["Authorization"]] <- paste("Bearer", token)
  user <- Sys.getenv("MLFLOW_TRACKING_USERNAME")
  if (nzchar(user)) {
    curl::handle_setopt(handle, username = user,
                        password = Sys.getenv("MLFLOW_TRACKING_PASSWORD"), httpauth = 1L)
  }
  curl::handle_setheaders(handle, .list = headers)
  handle
}

.rr_fetch <- function(url, handle, what) {
  response <- tryCatch(curl::curl_fetch_memory(url, handle = handle), error = function(e) {
    stop(sprintf("reprorun: cannot reach %s (%s): %s", .rr_server(), what, conditionMessage(e)),
         call. = FALSE)
  })
  text <- rawToChar(response$content)
  if (response$status_code >= 400) {
    message <- tryCatch(jsonlite::fromJSON(text)$message, error = function(e) text)
    stop(sprintf("reprorun: %s failed (HTTP %d): %s", what, response$status_code, message),
         call. = FALSE)
  }
  if (nzchar(text)) jsonlite::fromJSON(text, simplifyVector = FALSE) else list()
}

.rr_api <- function(method, endpoint, body = NULL, query = NULL) {
  url <- paste0(.rr_server(), "/api/2.0/mlflow/", endpoint)
  if (length(query)) {
    url <- paste0(url, "?", paste(names(query), vapply(query, curl::curl_escape, ""),
                                  sep = "=", collapse = "&"))
  }
  handle <- .rr_handle()
  if (!is.null(body)) {
    json <- jsonlite::toJSON(body, auto_unbox = TRUE, digits = NA, null = "null",
                             json_verbatim = TRUE)
    curl::handle_setopt(handle, customrequest = method, copypostfields = as.character(json))
  }
  .rr_fetch(url, handle, paste(method, endpoint))
}

# R puts its own and the system's library folders first on LD_LIBRARY_PATH; there they can
# load the system's libpython into the Python that runs reprorun and hide its packages.
# The reprorun command gets the path without them (the system's are searched anyway).
.rr_library_path <- function() {
  entries <- strsplit(Sys.getenv("LD_LIBRARY_PATH"), ":", fixed = TRUE)[[1]]
  system_dir <- grepl("^/(usr/)?lib(64)?(/[^/]*-linux-gnu)?/?$", entries) |
    grepl("/jvm/", entries, fixed = TRUE) | entries %in% c(R.home("lib"), "")
  paste(entries[!system_dir], collapse = ":")
}

.rr_command <- function(...) {
  exe <- Sys.getenv("REPRORUN_EXECUTABLE", "reprorun")
  env <- paste0("LD_LIBRARY_PATH=", shQuote(.rr_library_path()))
  out <- suppressWarnings(system2(exe, shQuote(c(...)), stdout = TRUE, stderr = TRUE, env = env))
  status <- attr(out, "status")
  if (!is.null(status) && status != 0) {
    stop(sprintf("reprorun: `reprorun %s` failed: %s", paste(c(...), collapse = " "),
                 paste(out, collapse = "\n")), call. = FALSE)
  }
  out
}

.rr_now <- function() round(as.numeric(Sys.time()) * 1000)

# A double for JSON with all 17 significant digits (jsonlite stops at 15), so the value
# arrives exactly as R has it; NaN and infinities as MLflow's strings.
.rr_number <- function(x) {
  if (is.nan(x)) return("NaN")
  if (is.infinite(x)) return(if (x > 0) "Infinity" else "-Infinity")
  structure(sprintf("%.17g", x), class = "json")
}

# A random id that neither uses nor changes the script's random numbers (set.seed stays
# in force: the same seed gives the same results with or without logging).
.rr_uuid <- function() {
  had <- exists(".Random.seed", envir = globalenv(), inherits = FALSE)
  if (had) saved <- get(".Random.seed", envir = globalenv())
  on.exit(if (had) assign(".Random.seed", saved, envir = globalenv())
          else rm(".Random.seed", envir = globalenv()))
  set.seed(NULL)
  paste(sample(c(0:9, letters[1:6]), 32, replace = TRUE), collapse = "")
}

# --- runs --------------------------------------------------------------------------------------

#' The run to log to: the one `reprorun run` started (owned by reprorun), else a new run in
#' `experiment_name` (or the environment's experiment, or the default one). Logs the
#' parameters rr_param returned that the run does not have yet. Returns the run id.
rr_start_run <- function(experiment_name = NULL, run_name = NULL) {
  if (!is.null(.rr$run_id)) return(invisible(.rr$run_id))
  attach_id <- Sys.getenv("MLFLOW_RUN_ID", Sys.getenv("REPRORUN_RUN_ID"))
  if (nzchar(attach_id)) {
    .rr$run_id <- attach_id
    .rr$owned <- FALSE
  } else if (!is.null(.rr_server())) {
    experiment_id <- .rr_experiment_id(experiment_name)
    script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)[1])
    tags <- list(list(key = "mlflow.source.type", value = "LOCAL"),
                 list(key = "mlflow.source.name", value = if (is.na(script)) "R" else script))
    body <- list(experiment_id = experiment_id, start_time = .rr_now(), tags = tags)
    if (!is.null(run_name)) body$run_name <- run_name
    .rr$run_id <- .rr_api("POST", "runs/create", body)$run$info$run_id
    .rr$owned <- TRUE
  } else {
    args <- c("runs", "create")
    if (!is.null(experiment_name)) args <- c(args, "--experiment-name", experiment_name)
    if (!is.null(run_name)) args <- c(args, "--run-name", run_name)
    .rr$run_id <- utils::tail(.rr_command(args), 1)
    .rr$owned <- TRUE
  }
  if (.rr$owned) {
    # The script's end ends the run: FINISHED, or FAILED when it stops on an error (Rscript
    # only: an error typed at the console does not end the run).
    reg.finalizer(.rr, function(env) rr_end_run(), onexit = TRUE)
    if (!interactive() && is.null(getOption("error"))) options(error = .rr_on_error)
  }
  .rr_log_pending_params()
  invisible(.rr$run_id)
}

.rr_experiment_id <- function(name) {
  if (is.null(name)) {
    found <- Sys.getenv("MLFLOW_EXPERIMENT_ID", Sys.getenv("REPRORUN_EXPERIMENT_ID"))
    if (nzchar(found)) return(found)
    name <- Sys.getenv("REPRORUN_EXPERIMENT_NAME")
    if (!nzchar(name)) return("0")
  }
  existing <- tryCatch(
    .rr_api("GET", "experiments/get-by-name", query = list(experiment_name = name)),
    error = function(e) NULL)
  if (!is.null(existing)) return(existing$experiment$experiment_id)
  .rr_api("POST", "experiments/create", list(name = name))$experiment_id
}

.rr_log_pending_params <- function() {
  if (length(.rr$params) == 0) return(invisible())
  have <- if (!.rr$owned && !is.null(.rr_server())) {
    run <- .rr_api("GET", "runs/get", query = list(run_id = .rr$run_id))$run
    vapply(run$data$params %||% list(), function(p) p$key, "")
  } else character()
  for (name in setdiff(names(.rr$params), c(have, .rr$logged))) {
    rr_log_param(name, .rr$params[[name]])
  }
}

`%||%` <- function(a, b) if (is.null(a)) b else a

.rr_active <- function() {
  if (is.null(.rr$run_id)) rr_start_run()
  .rr$run_id
}

.rr_on_error <- function() {
  rr_end_run("FAILED")
  quit(save = "no", status = 1, runLast = FALSE)
}

#' End the run this script created (FINISHED unless told); a run reprorun started is left
#' to reprorun, which ends it with the script's exit status.
rr_end_run <- function(status = "FINISHED") {
  if (is.null(.rr$run_id)) return(invisible())
  if (.rr$owned) {
    if (!is.null(.rr_server())) {
      .rr_api("POST", "runs/update",
              list(run_id = .rr$run_id, status = status, end_time = .rr_now()))
    } else {
      .rr_command("runs", "end", .rr$run_id, "--status", status)
    }
  }
  .rr$run_id <- NULL
  .rr$owned <- FALSE
  .rr$artifact_uri <- NULL
  .rr$logged <- character()
  invisible()
}

# --- logging ------------------------------------------------------------------------------------

# A key and its value as text: a parameter (endpoint runs/log-parameter, command `log param`)
# or a tag (runs/set-tag, `log tag`).
.rr_key_value <- function(endpoint, command, key, value) {
  run_id <- .rr_active()
  text <- .rr_text(value)
  if (!is.null(.rr_server())) {
    .rr_api("POST", endpoint, list(run_id = run_id, key = key, value = text))
  } else {
    .rr_command("log", command, key, text, "--run-id", run_id)
  }
  invisible(value)
}

rr_log_param <- function(key, value) {
  .rr_key_value("runs/log-parameter", "param", key, value)
  .rr$logged <- union(.rr$logged, key)
  invisible(value)
}

rr_set_tag <- function(key, value) .rr_key_value("runs/set-tag", "tag", key, value)

rr_log_metric <- function(key, value, step = 0L, timestamp = NULL) {
  run_id <- .rr_active()
  if (!is.numeric(value) || length(value) != 1) {
    stop(sprintf("rr_log_metric: metric '%s' must be one number, got %s.", key,
                 paste(format(value), collapse = " ")), call. = FALSE)
  }
  stamp <- if (is.null(timestamp)) .rr_now() else timestamp
  if (!is.null(.rr_server())) {
    .rr_api("POST", "runs/log-metric", list(run_id = run_id, key = key, value = .rr_number(value),
                                            timestamp = stamp, step = as.integer(step)))
  } else {
    .rr_command("log", "metric", key, sprintf("%.17g", value), "--step", as.integer(step),
                "--timestamp", format(stamp, scientific = FALSE), "--run-id", run_id)
  }
  invisible(value)
}

#' Copy a file, or a folder with its contents, into the run's artifacts (under
#' `artifact_path` when given).
rr_log_artifact <- function(path, artifact_path = NULL) {
  run_id <- .rr_active()
  if (!file.exists(path)) stop(sprintf("rr_log_artifact: no file or folder %s.", path), call. = FALSE)
  if (is.null(.rr_server())) {
    args <- c("log", "artifact", path, "--run-id", run_id)
    if (!is.null(artifact_path)) args <- c(args, "--artifact-path", artifact_path)
    .rr_command(args)
    return(invisible(path))
  }
  base <- if (is.null(artifact_path)) "" else paste0(gsub("^/+|/+$", "", artifact_path), "/")
  if (dir.exists(path)) {
    files <- list.files(path, recursive = TRUE, all.files = TRUE)
    targets <- paste0(base, basename(normalizePath(path)), "/", files)
    sources <- file.path(path, files)
  } else {
    targets <- paste0(base, basename(path))
    sources <- path
  }
  for (i in seq_along(sources)) .rr_put_artifact(run_id, sources[[i]], targets[[i]])
  invisible(path)
}

.rr_put_artifact <- function(run_id, source, target) {
  if (is.null(.rr$artifact_uri)) {
    .rr$artifact_uri <- .rr_api("GET", "runs/get", query = list(run_id = run_id))$run$info$artifact_uri
  }
  uri <- .rr$artifact_uri
  if (grepl("^mlflow-artifacts:", uri)) {
    # Through the server's artifact proxy: PUT the file's bytes.
    rest <- sub("^mlflow-artifacts:(//[^/]*)?/*", "", uri)
    url <- paste0(.rr_server(), "/api/2.0/mlflow-artifacts/artifacts/", rest, "/",
                  paste(vapply(strsplit(target, "/")[[1]], curl::curl_escape, ""), collapse = "/"))
    handle <- .rr_handle("application/octet-stream")
    bytes <- readBin(source, "raw", n = file.info(source)$size)
    curl::handle_setopt(handle, customrequest = "PUT", copypostfields = bytes)
    .rr_fetch(url, handle, paste("upload", target))
  } else {
    # A folder on this machine (reprorun's embedded store): copy the file there.
    folder <- sub("^file://", "", uri)
    destination <- file.path(utils::URLdecode(folder), target)
    dir.create(dirname(destination), recursive = TRUE, showWarnings = FALSE)
    if (!file.copy(source, destination, overwrite = TRUE)) {
      stop(sprintf("rr_log_artifact: cannot copy %s to %s.", source, destination), call. = FALSE)
    }
  }
}

#' Save `object` with saveRDS as the run's model `path`, with an MLmodel file describing it
#' (flavor reprorun_rds: readRDS(file.path(<model folder>, "model.rds")) loads it).
rr_log_model <- function(object, path = "model") {
  run_id <- .rr_active()
  scratch <- tempfile("rr-model-")
  folder <- file.path(scratch, basename(path))
  dir.create(folder, recursive = TRUE)
  on.exit(unlink(scratch, recursive = TRUE), add = TRUE)
  saveRDS(object, file.path(folder, "model.rds"))
  uuid <- .rr_uuid()
  created <- format(Sys.time(), "%Y-%m-%d %H:%M:%OS6", tz = "UTC")
  r_version <- paste(R.version$major, R.version$minor, sep = ".")
  classes <- paste(class(object), collapse = ", ")
  writeLines(c(
    sprintf("artifact_path: %s", path),
    "flavors:",
    "  reprorun_rds:",
    "    data: model.rds",
    sprintf("    r_version: '%s'", r_version),
    sprintf("    class: '%s'", classes),
    sprintf("model_uuid: %s", uuid),
    sprintf("run_id: %s", run_id),
    sprintf("utc_time_created: '%s'", created)
  ), file.path(folder, "MLmodel"))
  parent <- dirname(path)
  rr_log_artifact(folder, if (parent == ".") NULL else parent)
  model <- list(artifact_path = path, run_id = run_id, model_uuid = uuid,
                utc_time_created = created,
                flavors = list(reprorun_rds = list(data = "model.rds", r_version = r_version,
                                                   class = classes)))
  if (!is.null(.rr_server())) {
    json <- as.character(jsonlite::toJSON(model, auto_unbox = TRUE))
    .rr_api("POST", "runs/log-model", list(run_id = run_id, model_json = json))
  } else {
    .rr$models[[length(.rr$models) + 1]] <- model
    history <- as.character(jsonlite::toJSON(.rr$models, auto_unbox = TRUE))
    .rr_command("log", "tag", "mlflow.log-model.history", history, "--run-id", run_id)
  }
  invisible(path)
}
