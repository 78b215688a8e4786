//! `GET /metrics`: the Prometheus registry the daemon hands in ([`crate::AppState::with_metrics`]),
//! in the OpenMetrics text format. Authenticated like every other route. The API server only
//! serves the registry; what is in it (the controller runtime's metrics) is registered by
//! whoever builds the daemon, so this crate depends on no controller.

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{AppState, status::Status};

/// The content type of `prometheus_client::encoding::text::encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(registry) = &state.metrics else {
        return Status::not_found("this server exports no metrics").into_response();
    };
    let mut text = String::new();
    let encoded = {
        let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            Status::internal(format!("encoding the metrics failed: {e}")).into_response()
        }
    }
}
