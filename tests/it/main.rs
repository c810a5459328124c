//! One integration-test binary (matklad's advice): every module is a tier of
//! behaviour checked against real parts.
//!
//! `model_*` modules load the real default model; nextest runs them one at a
//! time (see .config/nextest.toml).

mod boundaries;
mod cluster_metrics;
mod cluster_security;
mod cluster_withdraw;
mod fetch_model;
mod fuzz;
mod hostile_worker;
mod lineage_crash;
mod lineage_store;
mod model_cluster;
mod model_dedup;
mod model_engine;
mod model_judge;
mod model_run;
mod model_verify;
mod pipeline;
mod plans;
mod review;
mod support_check;
mod tracking;
mod verify_inputs;
