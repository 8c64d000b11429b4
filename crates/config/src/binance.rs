//! Binance USDⓈ-M exchange parameters: the leverage-bracket CSV and the symbol-filter JSON
//! (copies of both are embedded from `data/`, see `data/PROVENANCE.md`).
//!
//! Owns [`load_binance_brackets_csv`], [`BracketTable`], [`fill_brackets`] and
//! [`load_binance_symbols_json`]. Known quirk of the CSV: BTCUSDT and ETHUSDT appear three
//! times each (907 blocks, 903 symbols). The first block per symbol is the perpetual and is
//! kept; later blocks are *reported* in [`BracketTable::duplicates`], never silently
//! dropped. The CSV's `cum` column is checked against `bracket_cums` and disagreements are
//! reported in [`BracketTable::cum_mismatches`] (the computed value is kept: the engine's
//! formula is the law). This module never reads files itself, never parses through a
//! float, and never panics on bad input.

use crate::error::{ConfigError, Result};
use crate::file::{bracket_file, brackets_from_rows, BracketFile, ConfigFile};
use crate::validate::BracketRow;
use perpcore_types::{Bracket, Money, Price, Qty, Rate};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The Binance USDⓈ-M leverage-bracket table (2026-09), embedded.
pub const BINANCE_USDM_BRACKETS_CSV: &str = include_str!("../data/binance_usdm_brackets.csv");
/// Tick size, lot size and min quantity of 256 USDⓈ-M symbols (MIT, nkaz001/hftbacktest),
/// embedded.
pub const BINANCE_USDM_SYMBOLS_JSON: &str = include_str!("../data/binance_usdm_symbols_256.json");

const COLUMNS: [&str; 7] = [
    "symbol",
    "bracket",
    "notional_floor",
    "notional_cap",
    "maint_margin_ratio",
    "max_leverage",
    "cum",
];

/// The brackets kept for one symbol (its first block in the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolBrackets {
    pub symbol: String,
    /// 1-based block number in the file.
    pub block: usize,
    /// CSV line of the block's first row (the header is line 1).
    pub line: u64,
    /// With `cum` as computed by `bracket_cums`.
    pub brackets: Vec<Bracket>,
}

/// A later block for a symbol already seen: not used, but reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateBlock {
    pub symbol: String,
    /// 1-based block number in the file.
    pub block: usize,
    pub line: u64,
    /// The block number that was kept for this symbol.
    pub kept_block: usize,
    pub brackets: Vec<Bracket>,
}

/// A row whose `cum` column differs from `bracket_cums`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CumMismatch {
    pub symbol: String,
    pub block: usize,
    /// 1-based bracket number, as in the CSV.
    pub bracket: u32,
    pub line: u64,
    pub csv_cum: Money,
    pub computed_cum: Money,
}

/// The parsed bracket CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BracketTable {
    /// Data rows read.
    pub rows: usize,
    /// Blocks read (a block starts at bracket 1).
    pub blocks: usize,
    /// First block per symbol, in file order.
    pub symbols: Vec<SymbolBrackets>,
    /// Later blocks of an already-seen symbol, in file order.
    pub duplicates: Vec<DuplicateBlock>,
    /// Rows whose `cum` column disagrees with the computed value.
    pub cum_mismatches: Vec<CumMismatch>,
    index: HashMap<String, usize>,
}

impl BracketTable {
    /// The kept brackets of `symbol`.
    pub fn get(&self, symbol: &str) -> Option<&SymbolBrackets> {
        self.index.get(symbol).and_then(|&i| self.symbols.get(i))
    }
    /// Number of distinct symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
    /// The kept brackets of `symbol` in the file format (every `cum` written out), ready
    /// to drop into an [`crate::InstrumentFile`].
    pub fn bracket_files(&self, symbol: &str) -> Option<Vec<BracketFile>> {
        self.get(symbol)
            .map(|s| s.brackets.iter().map(bracket_file).collect())
    }
}

struct Row {
    line: u64,
    symbol: String,
    bracket: u32,
    bracket_row: BracketRow,
    cum: Money,
}

/// Parse the Binance bracket CSV (`symbol,bracket,notional_floor,notional_cap,
/// maint_margin_ratio,max_leverage,cum`; columns found by header name). Every block must
/// be a valid bracket list (same rules as a config: contiguous, mmr increasing, leverage
/// decreasing, maintenance below initial), else the error names the CSV line and column.
pub fn load_binance_brackets_csv(text: &str) -> Result<BracketTable> {
    // The published file has CRLF line ends, with which the csv crate's line numbers lag
    // by one; normalise so that error and report lines match an editor's.
    let text: std::borrow::Cow<'_, str> = if text.contains('\r') {
        text.replace("\r\n", "\n").into()
    } else {
        text.into()
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| ConfigError::new("csv header", e.to_string()))?
        .clone();
    let mut col = [0usize; COLUMNS.len()];
    for (k, name) in COLUMNS.iter().enumerate() {
        col[k] = headers
            .iter()
            .position(|h| h == *name)
            .ok_or_else(|| ConfigError::new("csv header", format!("missing column {name:?}")))?;
    }

    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            ConfigError::new(format!("csv line {line}"), e.to_string())
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let f = |k: usize| format!("csv line {line}.{}", COLUMNS[k]);
        let get = |k: usize| -> Result<&str> {
            rec.get(col[k])
                .ok_or_else(|| ConfigError::new(f(k), "missing value"))
        };
        let symbol = get(0)?.to_string();
        if symbol.is_empty() {
            return Err(ConfigError::new(f(0), "must not be empty"));
        }
        let int = |k: usize| -> Result<u32> {
            let s = get(k)?;
            s.parse::<u32>()
                .map_err(|_| ConfigError::new(f(k), format!("{s:?} is not a whole number")))
        };
        let money = |k: usize| -> Result<Money> {
            Money::parse(get(k)?).map_err(|e| ConfigError::num(f(k), e))
        };
        rows.push(Row {
            line,
            symbol,
            bracket: int(1)?,
            bracket_row: BracketRow {
                floor: money(2)?,
                cap: money(3)?,
                mmr: Rate::parse(get(4)?).map_err(|e| ConfigError::num(f(4), e))?,
                max_leverage: int(5)?,
            },
            cum: money(6)?,
        });
    }

    // Split into blocks: a block starts at bracket 1 and numbers its rows 1, 2, 3, …
    let mut blocks: Vec<&[Row]> = Vec::new();
    let mut start = 0usize;
    for (k, row) in rows.iter().enumerate() {
        if row.bracket == 1 {
            if k > start {
                blocks.push(&rows[start..k]);
            }
            start = k;
            continue;
        }
        let field = format!("csv line {}.bracket", row.line);
        let Some(prev) = k.checked_sub(1).and_then(|p| rows.get(p)) else {
            return Err(ConfigError::new(
                field,
                "the first block must start at bracket 1",
            ));
        };
        if prev.symbol != row.symbol {
            return Err(ConfigError::new(
                field,
                format!("a new block for {} must start at bracket 1", row.symbol),
            ));
        }
        if Some(row.bracket) != prev.bracket.checked_add(1) {
            return Err(ConfigError::new(
                field,
                format!("{} does not follow bracket {}", row.bracket, prev.bracket),
            ));
        }
    }
    if rows.len() > start {
        blocks.push(&rows[start..]);
    }

    let mut table = BracketTable {
        rows: rows.len(),
        blocks: blocks.len(),
        symbols: Vec::new(),
        duplicates: Vec::new(),
        cum_mismatches: Vec::new(),
        index: HashMap::new(),
    };
    for (b, block) in blocks.iter().enumerate() {
        let block_no = b + 1;
        let brs: Vec<BracketRow> = block.iter().map(|r| r.bracket_row).collect();
        let path = |n: usize, name: &str| {
            let line = block.get(n).map(|r| r.line).unwrap_or(0);
            let column = match name {
                "floor" => "notional_floor",
                "cap" => "notional_cap",
                "mmr" => "maint_margin_ratio",
                other => other,
            };
            format!("csv line {line}.{column}")
        };
        let first_leverage = brs.first().map(|r| r.max_leverage).unwrap_or(0);
        // `cum` from the CSV is compared below and reported, not enforced.
        let brackets = brackets_from_rows(&brs, &[], first_leverage, &path)?;
        for (row, computed) in block.iter().zip(&brackets) {
            if row.cum != computed.cum {
                table.cum_mismatches.push(CumMismatch {
                    symbol: row.symbol.clone(),
                    block: block_no,
                    bracket: row.bracket,
                    line: row.line,
                    csv_cum: row.cum,
                    computed_cum: computed.cum,
                });
            }
        }
        let (symbol, line) = match block.first() {
            Some(r) => (r.symbol.clone(), r.line),
            None => continue,
        };
        match table.index.get(&symbol) {
            Some(&kept) => table.duplicates.push(DuplicateBlock {
                symbol,
                block: block_no,
                line,
                kept_block: table.symbols.get(kept).map(|s| s.block).unwrap_or(0),
                brackets,
            }),
            None => {
                table.index.insert(symbol.clone(), table.symbols.len());
                table.symbols.push(SymbolBrackets {
                    symbol,
                    block: block_no,
                    line,
                    brackets,
                });
            }
        }
    }
    Ok(table)
}

/// Fill every instrument whose `brackets` list is empty with the kept brackets of the
/// same symbol from `table`. Errors name the instrument if its symbol is not in the table.
pub fn fill_brackets(file: &mut ConfigFile, table: &BracketTable) -> Result<()> {
    for (j, inst) in file.instruments.iter_mut().enumerate() {
        if !inst.brackets.is_empty() {
            continue;
        }
        inst.brackets = table.bracket_files(&inst.symbol).ok_or_else(|| {
            ConfigError::new(
                format!("instruments[{j}].brackets"),
                format!(
                    "empty, and {:?} is not in the Binance bracket table",
                    inst.symbol
                ),
            )
        })?;
    }
    Ok(())
}

/// Tick size, lot size and min quantity of one symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolFilters {
    pub tick_size: Price,
    pub lot_size: Qty,
    pub min_qty: Qty,
}

#[derive(Deserialize)]
struct RawFilters {
    tick_size: String,
    lot_size: String,
    min_qty: String,
}

/// Parse the hftbacktest symbol JSON (`{"SOLUSDT": {"tick_size": "0.0010", "lot_size":
/// "1", "min_qty": "1", …}, …}`; other keys ignored), exactly.
pub fn load_binance_symbols_json(text: &str) -> Result<BTreeMap<String, SymbolFilters>> {
    let raw: BTreeMap<String, RawFilters> =
        serde_json::from_str(text).map_err(|e| ConfigError::new("json", e.to_string()))?;
    let mut out = BTreeMap::new();
    for (symbol, r) in raw {
        let f = |name: &str| format!("{symbol}.{name}");
        let filters = SymbolFilters {
            tick_size: Price::parse(&r.tick_size)
                .map_err(|e| ConfigError::num(f("tick_size"), e))?,
            lot_size: Qty::parse(&r.lot_size).map_err(|e| ConfigError::num(f("lot_size"), e))?,
            min_qty: Qty::parse(&r.min_qty).map_err(|e| ConfigError::num(f("min_qty"), e))?,
        };
        out.insert(symbol, filters);
    }
    Ok(out)
}
