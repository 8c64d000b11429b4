//! The campaign audit result and its renderings.
//!
//! Owns: the end-to-end entry point [`run_campaign`], the serialisable
//! [`CampaignResult`], its fixed-width text table ([`CampaignResult::render_table`]) and
//! its JSON form ([`CampaignResult::to_json`]).
//!
//! Must never: print floats (money is rendered with [`format_amount`], exact decimal
//! text; in JSON money fields are strings), depend on `HashMap` order, clocks or the
//! environment, or panic on bad input. Same inputs give the same bytes.

use std::borrow::Borrow;
use std::fmt::Write as _;

use serde::Serialize;

use crate::draw::{select_winners, DrawNumber, Winner};
use crate::error::CampaignError;
use crate::money::{format_amount, serialize_amount};
use crate::volume::{compute_volume, AccountVolume, FillRecord, VolumeParams};

/// Everything a campaign audit needs besides the fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignParams {
    /// Window and tier thresholds.
    pub volume: VolumeParams,
    /// Block hash, hex, optional `0x` prefix.
    pub block_hash: String,
    /// Number of winners to draw.
    pub winners: usize,
}

/// The audit outcome. Field order is the JSON field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignResult {
    /// Inclusive window start, ns.
    pub window_start_ns: u64,
    /// Exclusive window end, ns.
    pub window_end_ns: u64,
    /// Share-tier threshold (exact decimal text in JSON).
    #[serde(serialize_with = "serialize_amount")]
    pub share_threshold: i128,
    /// Draw-tier threshold (exact decimal text in JSON).
    #[serde(serialize_with = "serialize_amount")]
    pub draw_threshold: i128,
    /// Block hash exactly as given.
    pub block_hash: String,
    /// Draw number derived from the hash.
    pub draw_number: DrawNumber,
    /// Winners requested (`n`).
    pub winners_requested: usize,
    /// Number of accounts that reached the draw tier.
    pub draw_eligible: usize,
    /// Main accounts with counted volume, ascending id.
    pub accounts: Vec<AccountVolume>,
    /// Winners in rank order (level descending, id ascending).
    pub winners: Vec<Winner>,
}

/// Runs the whole audit: volume, tiers, draw.
///
/// The hash is validated first, then the fills, then the draw candidates (accounts
/// that reached the draw tier; ids above 9,999,999,999 among them are an error).
pub fn run_campaign<I>(fills: I, params: &CampaignParams) -> Result<CampaignResult, CampaignError>
where
    I: IntoIterator,
    I::Item: Borrow<FillRecord>,
{
    let draw_number = DrawNumber::from_block_hash(&params.block_hash)?;
    let accounts = compute_volume(fills, &params.volume)?;
    let candidates: Vec<u64> = accounts
        .iter()
        .filter(|a| a.reached_draw)
        .map(|a| a.account)
        .collect();
    let draw_eligible = candidates.len();
    let winners = select_winners(&draw_number, candidates, params.winners)?;
    Ok(CampaignResult {
        window_start_ns: params.volume.start_ns,
        window_end_ns: params.volume.end_ns,
        share_threshold: params.volume.share_threshold,
        draw_threshold: params.volume.draw_threshold,
        block_hash: params.block_hash.clone(),
        draw_number,
        winners_requested: params.winners,
        draw_eligible,
        accounts,
        winners,
    })
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Renders rows under headers; each column is as wide as its widest cell, columns are
/// separated by two spaces, and trailing spaces are trimmed.
fn render_grid(out: &mut String, headers: &[(&str, Align)], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header_cells: Vec<String> = headers.iter().map(|(h, _)| (*h).to_owned()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let rule_aligns: Vec<Align> = headers.iter().map(|_| Align::Left).collect();
    let aligns: Vec<Align> = headers.iter().map(|(_, a)| *a).collect();
    push_line(out, &header_cells, &widths, &aligns);
    push_line(out, &rule, &widths, &rule_aligns);
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        push_line(out, row, &widths, &aligns);
    }
}

fn push_line(out: &mut String, cells: &[String], widths: &[usize], aligns: &[Align]) {
    let mut line = String::new();
    for (i, ((cell, w), a)) in cells.iter().zip(widths).zip(aligns).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        // Writing to a String cannot fail.
        let _ = match a {
            Align::Left => write!(line, "{cell:<w$}"),
            Align::Right => write!(line, "{cell:>w$}"),
        };
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

impl CampaignResult {
    /// Fixed-width plain-text report (ASCII, `\n` line ends, no trailing spaces).
    /// Money is exact decimal text in USDT.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let summary = [
            (
                "window_ns",
                format!("[{}, {})", self.window_start_ns, self.window_end_ns),
            ),
            (
                "share_threshold",
                format!("{} USDT", format_amount(self.share_threshold)),
            ),
            (
                "draw_threshold",
                format!("{} USDT", format_amount(self.draw_threshold)),
            ),
            ("block_hash", self.block_hash.clone()),
            ("draw_number", self.draw_number.as_str().to_owned()),
            (
                "winners",
                format!(
                    "{} drawn of {} requested, {} draw-eligible",
                    self.winners.len(),
                    self.winners_requested,
                    self.draw_eligible
                ),
            ),
        ];
        out.push_str("CAMPAIGN AUDIT\n");
        for (key, value) in &summary {
            let _ = writeln!(out, "{key:<15}  {value}");
        }
        out.push_str("\nACCOUNTS\n");
        let rows: Vec<Vec<String>> = self
            .accounts
            .iter()
            .map(|a| {
                vec![
                    a.account.to_string(),
                    format_amount(a.volume),
                    yes_no(a.reached_share),
                    yes_no(a.reached_draw),
                ]
            })
            .collect();
        render_grid(
            &mut out,
            &[
                ("ACCOUNT", Align::Right),
                ("VOLUME_USDT", Align::Right),
                ("SHARE", Align::Left),
                ("DRAW", Align::Left),
            ],
            &rows,
        );
        out.push_str("\nWINNERS\n");
        let rows: Vec<Vec<String>> = self
            .winners
            .iter()
            .map(|w| {
                vec![
                    w.rank.to_string(),
                    w.account.to_string(),
                    w.account_digits.clone(),
                    w.level.to_string(),
                ]
            })
            .collect();
        render_grid(
            &mut out,
            &[
                ("RANK", Align::Right),
                ("ACCOUNT", Align::Right),
                ("DIGITS", Align::Left),
                ("LEVEL", Align::Right),
            ],
            &rows,
        );
        out
    }

    /// Pretty-printed JSON (2-space indent, fields in declaration order, money as
    /// exact decimal strings), with a trailing newline.
    pub fn to_json(&self) -> Result<String, CampaignError> {
        let mut s =
            serde_json::to_string_pretty(self).map_err(|e| CampaignError::Json(e.to_string()))?;
        s.push('\n');
        Ok(s)
    }
}
