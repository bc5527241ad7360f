//! The database schema: Optuna's RDB schema version 12 (alembic head
//! `v3.2.0.a`), byte for byte the DDL that Optuna 5.0 issues on SQLite, plus
//! the coordinator's own tables, all prefixed `mnist_`.
//!
//! Optuna (`optuna.load_study(storage="sqlite:///…")`) and optuna-dashboard
//! read the core tables of a live study; they ignore the `mnist_` tables.
//! Only the coordinator writes to the database.

/// Optuna's `SCHEMA_VERSION` (`version_info.schema_version`).
pub const OPTUNA_SCHEMA_VERSION: i64 = 12;
/// The alembic revision of that schema (`alembic_version.version_num`).
pub const OPTUNA_ALEMBIC_HEAD: &str = "v3.2.0.a";
/// `version_info.library_version`: the Optuna release whose schema we write.
pub const OPTUNA_LIBRARY_VERSION: &str = "5.0.0";
/// Version of the `mnist_` tables (`mnist_meta.schema_version`).
pub const MNIST_SCHEMA_VERSION: i64 = 1;

/// Optuna's tables, in creation order, as Optuna 5.0.0 creates them.
pub const OPTUNA_TABLES: &[&str] = &[
    "CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
)",
    "CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name)",
    "CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
)",
    "CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
)",
    "CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	\"key\" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, \"key\"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
)",
    "CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	\"key\" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, \"key\"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
)",
    "CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
)",
    "CREATE INDEX ix_trials_study_id ON trials (study_id)",
    "CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	\"key\" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, \"key\"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	\"key\" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, \"key\"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
)",
    "CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)",
];

/// The coordinator's own tables (idempotent).
///
/// - `mnist_meta`: key/value facts about the database (schema version).
/// - `mnist_studies`: one row per study the coordinator manages: its state
///   (RUNNING/STOPPED/COMPLETE), why it ended, its configuration (search
///   space, sampler, pruner, limits, metric, base training config) as JSON.
/// - `mnist_trials`: per trial: retries, whether it was enqueued, the latest
///   lease (fencing token, holder, slot, expiry; holder NULL when no live
///   lease) and the last failure or re-queue reason.
/// - `mnist_workers`: registered workers and their devices.
/// - `mnist_artifacts`: files uploaded for trials (stored on disk).
/// - `mnist_events`: the durable, ordered event log of every study, written in
///   the same transaction as the change it describes. `WatchStudy` replays it;
///   an outbox (e.g. MLflow delivery) can tail it by `seq` with its own cursor.
pub const MNIST_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS mnist_meta (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
)",
    "CREATE TABLE IF NOT EXISTS mnist_studies (
    study_id INTEGER NOT NULL PRIMARY KEY REFERENCES studies (study_id),
    state TEXT NOT NULL,
    end_reason TEXT NOT NULL DEFAULT '',
    config_json TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER
)",
    "CREATE TABLE IF NOT EXISTS mnist_trials (
    trial_id INTEGER NOT NULL PRIMARY KEY REFERENCES trials (trial_id),
    study_id INTEGER NOT NULL,
    retries INTEGER NOT NULL DEFAULT 0,
    enqueued INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER,
    lease_holder TEXT,
    lease_slot INTEGER,
    lease_expires_ms INTEGER,
    hostname TEXT,
    device TEXT,
    reason TEXT
)",
    "CREATE INDEX IF NOT EXISTS ix_mnist_trials_study_id ON mnist_trials (study_id)",
    "CREATE TABLE IF NOT EXISTS mnist_workers (
    worker_id TEXT NOT NULL PRIMARY KEY,
    hostname TEXT NOT NULL,
    devices_json TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
)",
    "CREATE TABLE IF NOT EXISTS mnist_artifacts (
    artifact_id INTEGER NOT NULL PRIMARY KEY,
    study_id INTEGER NOT NULL,
    trial_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (trial_id, name)
)",
    "CREATE TABLE IF NOT EXISTS mnist_events (
    seq INTEGER NOT NULL PRIMARY KEY,
    study_id INTEGER NOT NULL,
    trial_id INTEGER,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
)",
    "CREATE INDEX IF NOT EXISTS ix_mnist_events_study_seq ON mnist_events (study_id, seq)",
];
