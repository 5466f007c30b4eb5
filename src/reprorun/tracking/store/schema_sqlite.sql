-- Generated from reprorun/tracking/store/schema.py by
--   python -m reprorun.tracking.store.schema > schema_sqlite.sql
-- schema version 6; do not edit by hand.
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE experiments (
	experiment_id INTEGER NOT NULL, 
	name VARCHAR(256) NOT NULL, 
	artifact_location VARCHAR(1000) NOT NULL, 
	lifecycle_stage VARCHAR(32) DEFAULT 'active' NOT NULL, 
	creation_time BIGINT, 
	last_update_time BIGINT, 
	PRIMARY KEY (experiment_id), 
	UNIQUE (name)
);

CREATE TABLE registered_models (
	name VARCHAR(256) NOT NULL, 
	creation_time BIGINT NOT NULL, 
	last_updated_time BIGINT NOT NULL, 
	description VARCHAR(5000), 
	PRIMARY KEY (name)
);

CREATE TABLE schema_version (
	version INTEGER NOT NULL
);

CREATE TABLE experiment_tags (
	experiment_id INTEGER NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(5000), 
	PRIMARY KEY (experiment_id, "key"), 
	FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id)
);

CREATE TABLE logged_models (
	model_id VARCHAR(64) NOT NULL, 
	experiment_id INTEGER NOT NULL, 
	name VARCHAR(500) NOT NULL, 
	artifact_location VARCHAR(1000) NOT NULL, 
	creation_timestamp_ms BIGINT NOT NULL, 
	last_updated_timestamp_ms BIGINT NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	lifecycle_stage VARCHAR(32) DEFAULT 'active' NOT NULL, 
	model_type VARCHAR(500), 
	source_run_id VARCHAR(32), 
	status_message VARCHAR(1000), 
	PRIMARY KEY (model_id), 
	FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id)
);

CREATE INDEX ix_logged_models_experiment ON logged_models (experiment_id, creation_timestamp_ms);

CREATE TABLE model_version_tags (
	name VARCHAR(256) NOT NULL, 
	version INTEGER NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(5000), 
	PRIMARY KEY (name, version, "key"), 
	FOREIGN KEY(name) REFERENCES registered_models (name)
);

CREATE TABLE model_versions (
	name VARCHAR(256) NOT NULL, 
	version INTEGER NOT NULL, 
	creation_time BIGINT NOT NULL, 
	last_updated_time BIGINT NOT NULL, 
	description VARCHAR(5000), 
	user_id VARCHAR(256), 
	current_stage VARCHAR(20) NOT NULL, 
	source VARCHAR(1000) NOT NULL, 
	storage_location VARCHAR(1000), 
	run_id VARCHAR(32), 
	run_link VARCHAR(500), 
	model_id VARCHAR(64), 
	status VARCHAR(20) NOT NULL, 
	status_message VARCHAR(500), 
	PRIMARY KEY (name, version), 
	FOREIGN KEY(name) REFERENCES registered_models (name)
);

CREATE INDEX ix_model_versions_model ON model_versions (model_id);

CREATE INDEX ix_model_versions_run ON model_versions (run_id);

CREATE TABLE registered_model_aliases (
	name VARCHAR(256) NOT NULL, 
	alias VARCHAR(256) NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (name, alias), 
	FOREIGN KEY(name) REFERENCES registered_models (name)
);

CREATE TABLE registered_model_tags (
	name VARCHAR(256) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(5000), 
	PRIMARY KEY (name, "key"), 
	FOREIGN KEY(name) REFERENCES registered_models (name)
);

CREATE TABLE runs (
	run_uuid VARCHAR(32) NOT NULL, 
	name VARCHAR(250), 
	experiment_id INTEGER NOT NULL, 
	user_id VARCHAR(256), 
	status VARCHAR(20) NOT NULL, 
	start_time BIGINT NOT NULL, 
	end_time BIGINT, 
	artifact_uri VARCHAR(1000) NOT NULL, 
	lifecycle_stage VARCHAR(20) DEFAULT 'active' NOT NULL, 
	PRIMARY KEY (run_uuid), 
	FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id)
);

CREATE INDEX ix_runs_experiment_order ON runs (experiment_id, start_time DESC, run_uuid);

CREATE TABLE latest_metrics (
	run_uuid VARCHAR(32) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value FLOAT NOT NULL, 
	is_nan BOOLEAN DEFAULT '0' NOT NULL, 
	step BIGINT NOT NULL, 
	timestamp BIGINT NOT NULL, 
	experiment_id INTEGER, 
	start_time BIGINT, 
	PRIMARY KEY (run_uuid, "key"), 
	FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE INDEX ix_latest_metrics_order_asc ON latest_metrics (experiment_id, "key", is_nan, value, start_time DESC, run_uuid);

CREATE INDEX ix_latest_metrics_order_desc ON latest_metrics (experiment_id, "key", is_nan, value, start_time, run_uuid DESC);

CREATE INDEX ix_latest_metrics_time ON latest_metrics (experiment_id, "key", start_time DESC, run_uuid, is_nan, value);

CREATE TABLE logged_model_metrics (
	model_id VARCHAR(64) NOT NULL, 
	metric_name VARCHAR(250) NOT NULL, 
	metric_timestamp_ms BIGINT NOT NULL, 
	metric_step BIGINT NOT NULL, 
	metric_value FLOAT NOT NULL, 
	is_nan BOOLEAN DEFAULT '0' NOT NULL, 
	experiment_id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	dataset_name VARCHAR(500), 
	dataset_digest VARCHAR(36), 
	PRIMARY KEY (model_id, metric_name, metric_timestamp_ms, metric_step, run_id), 
	FOREIGN KEY(model_id) REFERENCES logged_models (model_id)
);

CREATE INDEX ix_logged_model_metrics_dataset ON logged_model_metrics (dataset_name, dataset_digest);

CREATE TABLE logged_model_params (
	model_id VARCHAR(64) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(8000) NOT NULL, 
	PRIMARY KEY (model_id, "key"), 
	FOREIGN KEY(model_id) REFERENCES logged_models (model_id)
);

CREATE TABLE logged_model_tags (
	model_id VARCHAR(64) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(8000), 
	PRIMARY KEY (model_id, "key"), 
	FOREIGN KEY(model_id) REFERENCES logged_models (model_id)
);

CREATE TABLE metrics (
	id INTEGER NOT NULL, 
	run_uuid VARCHAR(32) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value FLOAT NOT NULL, 
	is_nan BOOLEAN DEFAULT '0' NOT NULL, 
	step BIGINT NOT NULL, 
	timestamp BIGINT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE INDEX ix_metrics_run_key_step_time ON metrics (run_uuid, "key", step, timestamp);

CREATE TABLE params (
	run_uuid VARCHAR(32) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(8000) NOT NULL, 
	experiment_id INTEGER, 
	start_time BIGINT, 
	PRIMARY KEY (run_uuid, "key"), 
	FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE INDEX ix_params_length ON params (experiment_id, "key", length(value));

CREATE INDEX ix_params_order_asc ON params (experiment_id, "key", substr(value, 1, 200), start_time DESC, run_uuid);

CREATE INDEX ix_params_order_desc ON params (experiment_id, "key", substr(value, 1, 200), start_time, run_uuid DESC);

CREATE TABLE tags (
	run_uuid VARCHAR(32) NOT NULL, 
	"key" VARCHAR(250) NOT NULL, 
	value VARCHAR(8000), 
	experiment_id INTEGER, 
	PRIMARY KEY (run_uuid, "key"), 
	FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE INDEX ix_tags_experiment_key ON tags (experiment_id, "key");
