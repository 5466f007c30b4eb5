# reprorun's scorer for R crate models (carrier::crate, saved by mlflow_log_model): started by
# reprorun.clients.scoring as `Rscript scoring.R MODEL_DIR`. Reads requests from stdin, each a
# line with a byte count then that many bytes of JSON records; answers on stdout the same way
# with {"ok": true, "predictions": ...} or {"ok": false, "message": ...}.
args <- commandArgs(trailingOnly = TRUE)
spec_file <- file.path(args[1], "crate.bin")
model <- unserialize(readRDS(spec_file))
input <- file("stdin", open = "rb")
answer <- function(value) {
  text <- enc2utf8(as.character(jsonlite::toJSON(
    value, auto_unbox = TRUE, digits = NA, dataframe = "rows", na = "null"
  )))
  cat(nchar(text, type = "bytes"), "\n", text, sep = "")
  flush(stdout())
}
answer(list(ok = TRUE, ready = TRUE))
repeat {
  header <- readLines(input, n = 1)
  if (length(header) == 0) break
  size <- as.integer(header)
  payload <- rawToChar(readBin(input, "raw", size))
  Encoding(payload) <- "UTF-8"
  result <- tryCatch(
    {
      data <- jsonlite::fromJSON(payload, simplifyVector = TRUE)
      predictions <- model(data)
      if (is.matrix(predictions)) predictions <- as.data.frame(predictions)
      if (!is.data.frame(predictions)) predictions <- unname(as.vector(predictions))
      list(ok = TRUE, predictions = predictions)
    },
    error = function(e) list(ok = FALSE, message = conditionMessage(e))
  )
  answer(result)
}
