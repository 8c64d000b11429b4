//! Admin endpoints for the market data the engine would get from a feed, until a feed is
//! wired into `serve` (the mark price has its own in `http.rs`): the index price and the
//! announced funding rate, which `<symbol>@markPrice` reports as `i`, `r` and `T`.
//!
//! Must never: accept a request without the admin token (`http::admin_body` checks it).

use crate::error::ApiError;
use crate::http::{admin_body, admin_submit, json_str, App};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use perpcore_types::*;
use std::sync::Arc;

/// The routes, merged into the admin router.
pub fn router(app: Arc<App>, timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/admin/v1/indexPrice", post(index_price))
        .route("/admin/v1/fundingRate", post(funding_rate))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(app)
}

fn respond(r: Result<serde_json::Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn instrument(app: &App, v: &serde_json::Value) -> Result<InstrumentId, ApiError> {
    Ok(app
        .config
        .instrument_by_symbol(json_str(v, "symbol")?)
        .ok_or_else(ApiError::invalid_symbol)?
        .id)
}

/// `{"symbol": "BTCUSDT", "price": "30005.5"}` → `SetIndexPrice`.
async fn index_price(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let go = async {
        let v = admin_body(&app, &headers, &body).await?;
        let instrument = instrument(&app, &v)?;
        let price =
            Price::parse(json_str(&v, "price")?).map_err(|e| ApiError::illegal("price", e))?;
        admin_submit(&app, Command::SetIndexPrice { instrument, price }).await
    };
    respond(go.await)
}

/// `{"symbol": "BTCUSDT", "rate": "0.0001", "nextFundingTime": 1700000000000}` (ms) →
/// `SetFundingRate`.
async fn funding_rate(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let go = async {
        let v = admin_body(&app, &headers, &body).await?;
        let instrument = instrument(&app, &v)?;
        let rate = Rate::parse(json_str(&v, "rate")?).map_err(|e| ApiError::illegal("rate", e))?;
        let next_ms = v
            .get("nextFundingTime")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ApiError::missing("nextFundingTime"))?;
        let next_funding_ns = next_ms
            .checked_mul(1_000_000)
            .ok_or_else(|| ApiError::illegal("nextFundingTime", "out of range"))?;
        admin_submit(
            &app,
            Command::SetFundingRate {
                instrument,
                rate,
                next_funding_ns,
            },
        )
        .await
    };
    respond(go.await)
}
