//! `GET /version`: the build, in the shape of Kubernetes' `version.Info`. `kubectl version`
//! prints it, and the official Python client's `DynamicClient` refuses to start without it.

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

use crate::AppState;

/// The Kubernetes minor release whose API behaviour this server follows and is tested
/// against (kubectl warns when client and server are more than one minor apart).
const KUBERNETES_MINOR: u32 = 32;

pub fn routes() -> Router<AppState> {
    Router::new().route("/version", get(version))
}

/// Go's names for the platform, which Kubernetes clients expect (`linux/amd64`).
fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// The version document. `gitVersion` is semver: the Kubernetes level, with this build's
/// version as build metadata, so clients that parse it (skew checks) accept it.
pub fn info() -> Value {
    let ours = env!("CARGO_PKG_VERSION");
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR.to_string(),
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+startos.{ours}"),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": platform(),
    })
}

async fn version() -> Json<Value> {
    Json(info())
}
