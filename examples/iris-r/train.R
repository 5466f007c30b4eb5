# Train an rpart tree on iris; log its parameters, accuracy and the model into the run.
source(system("reprorun r-client", intern = TRUE))
library(rpart)

cp <- rr_param("cp", 0.05)
maxdepth <- rr_param("maxdepth", 3L)

rr_start_run()
set.seed(42)
train <- sort(sample(nrow(iris), 105))
fit <- rpart(Species ~ ., data = iris[train, ], method = "class",
             control = rpart.control(cp = cp, maxdepth = maxdepth))
predicted <- predict(fit, iris[-train, ], type = "class")
accuracy <- mean(predicted == iris$Species[-train])

rr_log_param("cp", cp)
rr_log_param("maxdepth", maxdepth)
rr_log_metric("accuracy", accuracy)
rr_log_metric("n_leaves", sum(fit$frame$var == "<leaf>"))
rr_set_tag("model.kind", "rpart")
tree <- file.path(tempdir(), "tree.txt")
writeLines(capture.output(print(fit)), tree)
rr_log_artifact(tree)
rr_log_model(fit, "model")
rr_end_run()
cat(sprintf("cp=%s maxdepth=%s accuracy=%.4f\n", cp, maxdepth, accuracy))
