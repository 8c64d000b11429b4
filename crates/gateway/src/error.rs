//! Errors in Binance's shape (`{"code":-1022,"msg":"..."}`) and the one table that maps
//! the engine's reject codes to Binance's.
//!
//! Owns: [`ApiError`], [`reject_to_binance`] and the operating errors of the crate
//! ([`GatewayError`]). Must never: invent a Binance code that clients map to a different
//! meaning; a reject with no Binance equivalent keeps the engine's code in its message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use perpcore_types::RejectReason;

/// An error answer: HTTP status, Binance code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: i32,
    pub msg: String,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: i32, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
            retry_after_s: None,
        }
    }
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }
    fn bad(code: i32, msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, msg)
    }
    pub fn bad_signature() -> ApiError {
        ApiError::bad(-1022, "Signature for this request is not valid.")
    }
    pub fn timestamp_outside() -> ApiError {
        ApiError::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
    }
    pub fn recv_window_too_large() -> ApiError {
        ApiError::bad(-1131, "recvWindow must be less than 60000")
    }
    pub fn key_format() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid.")
    }
    pub fn key_invalid() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    }
    pub fn missing(param: &str) -> ApiError {
        ApiError::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }
    pub fn illegal(param: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::bad(
            -1130,
            format!("Data sent for parameter '{param}' is not valid: {why}"),
        )
    }
    pub fn unknown_order() -> ApiError {
        ApiError::bad(-2011, "Unknown order sent.")
    }
    pub fn order_does_not_exist() -> ApiError {
        ApiError::bad(-2013, "Order does not exist.")
    }
    pub fn invalid_symbol() -> ApiError {
        ApiError::bad(-1121, "Invalid symbol.")
    }
    pub fn no_need_margin_type() -> ApiError {
        ApiError::bad(-4046, "No need to change margin type.")
    }
    pub fn position_side_mismatch() -> ApiError {
        ApiError::rejected(RejectReason::PositionSideMismatch)
    }
    pub fn no_need_position_side() -> ApiError {
        ApiError::bad(-4059, "No need to change position side.")
    }
    pub fn sent_when_not_required(param: &str) -> ApiError {
        ApiError::bad(
            -1106,
            format!("Parameter '{param}' sent when not required."),
        )
    }
    pub fn bad_param_combination() -> ApiError {
        ApiError::bad(-1128, "Combination of optional parameters invalid.")
    }
    pub fn interval_too_long(hours: u64) -> ApiError {
        ApiError::bad(
            -1127,
            format!("More than {hours} hours between startTime and endTime."),
        )
    }
    pub fn duplicate_client_id() -> ApiError {
        ApiError::bad(-4116, "ClientOrderId is duplicated.")
    }
    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few minutes.",
        )
    }
    /// Cluster mode: the stream never acknowledged the command within the retry budget;
    /// a copy may still have been stored and be applied (docs/CLUSTER.md). Binance's
    /// code for an unknown outcome.
    pub fn outcome_unknown(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1007,
            format!("Timeout waiting for response from backend server. Send status unknown; execution status unknown. ({what})"),
        )
    }
    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -1000,
            format!("An unknown error occurred while processing the request: {what}"),
        )
    }
    pub fn unsupported(what: impl std::fmt::Display) -> ApiError {
        ApiError::bad(-1000, format!("not supported by this gateway: {what}"))
    }
    /// An engine rejection, through the table.
    pub fn rejected(reason: RejectReason) -> ApiError {
        let (code, msg) = reject_to_binance(reason);
        ApiError::bad(code, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "msg": self.msg });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        // For the metrics middleware: errors by Binance code.
        r.extensions_mut()
            .insert(crate::metrics::BinanceCode(self.code));
        r
    }
}

/// Engine reject code → Binance code and message. The one table (docs/GATEWAY.md,
/// "Error codes"). Where Binance has a code for the same refusal, its code and message;
/// otherwise -1000 with `perpcore <engine code>: <engine text>`, so a client can still
/// tell every reason apart (STYLE: never fold two reasons into one).
pub fn reject_to_binance(reason: RejectReason) -> (i32, String) {
    use RejectReason as R;
    let known: Option<(i32, &str)> = match reason {
        R::UnknownInstrument => Some((-1121, "Invalid symbol.")),
        R::QtyNotPositive => Some((-4003, "Quantity less than or equal to zero.")),
        R::QtyBelowMin => Some((-4004, "Quantity less than min quantity.")),
        R::QtyAboveMax => Some((-4005, "Quantity greater than max quantity.")),
        R::PriceNotPositive => Some((-4001, "Price less than 0.")),
        R::LeverageOutOfRange => Some((-4028, "Leverage is not valid")),
        R::DuplicateOrderId => Some((-4116, "ClientOrderId is duplicated.")),
        R::UnknownOrder | R::NotOrderOwner => Some((-2011, "Unknown order sent.")),
        R::AmendNoChange => Some((-5027, "No need to modify the order.")),
        R::WouldTriggerImmediately => Some((-2021, "Order would immediately trigger.")),
        R::InsufficientMargin => Some((-2019, "Margin is insufficient.")),
        R::InsufficientBalance | R::WithdrawExceedsAvailable => {
            Some((-2018, "Balance is insufficient."))
        }
        R::LeverageExceedsBracket => Some((
            -2027,
            "Exceeded the maximum allowable position at current leverage.",
        )),
        R::LeverageUnderMargin => Some((
            -2028,
            "Leverage is smaller than permitted: insufficient margin balance.",
        )),
        R::MarginModeWithOpenOrders => Some((
            -4047,
            "Margin type cannot be changed if there exists open orders.",
        )),
        R::MarginModeWithPosition => Some((
            -4048,
            "Margin type cannot be changed if there exists position.",
        )),
        R::IsolatedInMultiAsset => Some((
            -4168,
            "Unable to adjust to isolated-margin mode under the Multi-Assets mode.",
        )),
        R::PostOnlyWouldTake => Some((
            -5022,
            "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
        )),
        R::FokCannotFill => Some((
            -5021,
            "Due to the order could not be filled immediately, the FOK order has been rejected. The order will not be recorded in the order history",
        )),
        R::ReduceOnlyNoPosition | R::ReduceOnlyWrongSide | R::AmendIncreasesReduceOnly => {
            Some((-2022, "ReduceOnly Order is rejected."))
        }
        R::PositionModeWithOpenOrders => Some((
            -4067,
            "Position side cannot be changed if there exists open orders.",
        )),
        R::PositionModeWithPosition => Some((
            -4068,
            "Position side cannot be changed if there exists position.",
        )),
        R::PositionSideMismatch => Some((
            -4061,
            "Order's position side does not match user's setting.",
        )),
        _ => None,
    };
    match known {
        Some((code, msg)) => (code, msg.to_string()),
        None => (
            -1000,
            format!("perpcore {}: {}", reason.code(), reason.text()),
        ),
    }
}

/// Operating failures of the gateway (start-up, key file, the core).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("api keys file {path}: {what}")]
    Keys { path: String, what: String },
    #[error(transparent)]
    Node(#[from] perpcore_node::NodeError),
    #[error(transparent)]
    Sequencer(#[from] perpcore_sequencer::SequencerError),
    #[error(transparent)]
    Journal(#[from] perpcore_journal::JournalError),
    #[error("the journal in {0} was made with a different configuration")]
    ConfigMismatch(String),
    #[error("replica restore: {0}")]
    Replica(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the core stopped: {0}")]
    CoreStopped(String),
    #[error("cluster: {0}")]
    Cluster(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keeps_reasons_apart_where_binance_has_no_code() {
        // Every reason without a Binance equivalent carries its own engine code, so no two
        // such reasons produce the same message.
        let mut seen = std::collections::BTreeSet::new();
        for r in RejectReason::ALL {
            let (code, msg) = reject_to_binance(*r);
            if code == -1000 {
                assert!(msg.starts_with(&format!("perpcore {}:", r.code())), "{msg}");
                assert!(seen.insert(msg));
            }
        }
        assert_eq!(reject_to_binance(RejectReason::PostOnlyWouldTake).0, -5022);
        assert_eq!(reject_to_binance(RejectReason::NotOrderOwner).0, -2011);
        assert_eq!(reject_to_binance(RejectReason::UnknownInstrument).0, -1121);
    }
}
