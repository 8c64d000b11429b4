//! `perpcore serve`'s protection options (rate limits and connection limits), flattened
//! into the `serve` subcommand. Defaults are Binance USDⓈ-M's (docs/GATEWAY.md,
//! "Rate limits"); 0 disables a limit.

use perpcore_gateway::RateLimits;

#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// REQUEST_WEIGHT per minute per client address (0: no limit).
    #[arg(long, default_value_t = RateLimits::default().weight_per_minute)]
    pub weight_limit: u32,
    /// New and amended orders per 10 seconds per account (0: no limit).
    #[arg(long, default_value_t = RateLimits::default().orders_per_10s)]
    pub orders_per_10s: u32,
    /// New and amended orders per minute per account (0: no limit).
    #[arg(long, default_value_t = RateLimits::default().orders_per_minute)]
    pub orders_per_minute: u32,
    /// Rate-limit refusals of one address within a minute after which it is banned
    /// (HTTP 418) for --ban-seconds (0: never).
    #[arg(long, default_value_t = RateLimits::default().ban_after_refusals)]
    pub ban_after_refusals: u32,
    /// How long such a ban lasts (Binance's first ban: 2 minutes).
    #[arg(long, default_value_t = RateLimits::default().ban_ms / 1000)]
    pub ban_seconds: u64,
    /// Open connections per listener (0: no limit).
    #[arg(long, default_value_t = RateLimits::default().max_connections)]
    pub max_connections: usize,
    /// Open connections of one client address per listener (0: no limit).
    #[arg(long, default_value_t = RateLimits::default().max_connections_per_address)]
    pub max_connections_per_address: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> RateLimits {
        RateLimits {
            weight_per_minute: self.weight_limit,
            orders_per_10s: self.orders_per_10s,
            orders_per_minute: self.orders_per_minute,
            ban_after_refusals: self.ban_after_refusals,
            ban_ms: self.ban_seconds.saturating_mul(1000),
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            ..RateLimits::default()
        }
    }
}
