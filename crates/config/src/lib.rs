//! perpcore-config: loads and validates the static configuration (assets, instruments,
//! risk brackets) that an engine is built from, and ships a default configuration with
//! real Binance parameters (`data/default.toml`, provenance in `data/PROVENANCE.md`).
//!
//! Owns the human-written file format ([`ConfigFile`]: TOML, or the same structure as
//! JSON), its exact conversion to [`perpcore_types::Config`], the validation rules
//! ([`validate()`]) and the Binance bracket/symbol loaders. It never touches a float
//! (decimals are strings parsed exactly by the types crate, extra precision is refused),
//! never panics on bad input (every error is a [`ConfigError`] naming the field path), and
//! does no I/O except [`load_path`], which reads the one file it is given.
//!
//! ```text
//! text ──ConfigFile::from_toml_str/from_json_str──▶ ConfigFile
//!      ──(optional) fill_brackets(&BracketTable)──▶ ConfigFile
//!      ──config_from_file──▶ Config (validated)
//! ```

mod binance;
mod error;
mod file;
mod validate;

pub use binance::{
    fill_brackets, load_binance_brackets_csv, load_binance_symbols_json, BracketTable, CumMismatch,
    DuplicateBlock, SymbolBrackets, SymbolFilters, BINANCE_USDM_BRACKETS_CSV,
    BINANCE_USDM_SYMBOLS_JSON,
};
pub use error::ConfigError;
pub use file::{
    config_from_file, file_from_config, AssetFile, BracketFile, ConfigFile, FundingFile,
    InstrumentFile, KindFile, MarkFile, MethodFile,
};
pub use validate::{validate, LOT_QUANTUM_RAW, MAX_BRACKETS, MAX_NOTIONAL_UNITS};

use perpcore_types::Config;
use std::path::Path;

/// The default configuration file, embedded.
pub const DEFAULT_TOML: &str = include_str!("../data/default.toml");

/// Load a configuration from TOML text.
pub fn load_toml_str(text: &str) -> Result<Config, ConfigError> {
    config_from_file(&ConfigFile::from_toml_str(text)?)
}

/// Load a configuration from JSON text of the same structure as the TOML format.
pub fn load_json_str(text: &str) -> Result<Config, ConfigError> {
    config_from_file(&ConfigFile::from_json_str(text)?)
}

/// Load a configuration from an already-parsed JSON value (a scenario's inline config).
pub fn load_json_value(value: &serde_json::Value) -> Result<Config, ConfigError> {
    config_from_file(&ConfigFile::from_json_value(value)?)
}

/// Load a configuration file, choosing the format by extension (`.toml` or `.json`).
pub fn load_path(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let load: fn(&str) -> Result<Config, ConfigError> = match ext.as_deref() {
        Some("toml") => load_toml_str,
        Some("json") => load_json_str,
        _ => {
            return Err(ConfigError::new(
                name,
                "unknown extension: expected .toml or .json",
            ))
        }
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e.to_string()))?;
    load(&text).map_err(|e| ConfigError::new(format!("{name}: {}", e.field), e.message))
}

/// The embedded default configuration: BTCUSDT, ETHUSDT, SOLUSDT (USDT-M) and BTCUSDC
/// (USDC-M), assets USDT, USDC, BTC, ETH, SOL.
///
/// # Panics
/// Only if the embedded `data/default.toml` is invalid, which the test suite rules out;
/// never because of anything a caller passes.
pub fn default_config() -> Config {
    match load_toml_str(DEFAULT_TOML) {
        Ok(c) => c,
        Err(e) => panic!("embedded data/default.toml is invalid: {e}"),
    }
}
