//! Hand-worked examples for the campaign audit (volume, tiers, draw, report).
//!
//! Owns: example-based tests whose expected values are derived by hand in comments.
//! Must never: compute expectations with the code under test.

use perpcore_campaign::{
    compute_volume, match_level, run_campaign, select_winners, AccountVolume, CampaignError,
    CampaignParams, ContractFamily, DrawNumber, FillRecord, VolumeParams, SCALE,
};

const USDT: i128 = SCALE;

fn fill(ts_ns: u64, account: u64, contract: ContractFamily, cross: bool, usdt: i128) -> FillRecord {
    FillRecord {
        ts_ns,
        account,
        parent: None,
        contract,
        cross_margin: cross,
        notional: usdt * USDT,
    }
}

fn sub(ts_ns: u64, account: u64, parent: u64, usdt: i128) -> FillRecord {
    FillRecord {
        parent: Some(parent),
        ..fill(ts_ns, account, ContractFamily::UsdtM, true, usdt)
    }
}

fn params() -> VolumeParams {
    VolumeParams {
        start_ns: 1_000,
        end_ns: 2_000,
        share_threshold: 500 * USDT,
        draw_threshold: 1_000 * USDT,
    }
}

fn ids(winners: &[perpcore_campaign::Winner]) -> Vec<(u64, u8)> {
    winners.iter().map(|w| (w.account, w.level)).collect()
}

fn draw(hash: &str) -> DrawNumber {
    DrawNumber::from_block_hash(hash).expect("valid hash")
}

// ---------------------------------------------------------------- volume ----------

#[test]
fn volume_filters_contract_margin_window_and_sub_accounts() {
    use ContractFamily::{CoinM, UsdcM, UsdtM};
    let fills = [
        // account 1 (main), window [1000, 2000)
        fill(1_000, 1, UsdtM, true, 300), // counted: ts == start is inside
        fill(1_999, 1, UsdtM, true, 200), // counted: last ns inside
        fill(2_000, 1, UsdtM, true, 10_000), // NOT: ts == end is outside
        fill(999, 1, UsdtM, true, 10_000), // NOT: before start
        fill(1_500, 1, UsdcM, true, 5_000), // NOT: USDC-M
        fill(1_500, 1, CoinM, true, 5_000), // NOT: coin-M
        fill(1_500, 1, UsdtM, false, 5_000), // NOT: isolated margin
        // account 11 is a sub-account of 1: counted for nobody
        sub(1_500, 11, 1, 10_000),
        sub(1_600, 11, 1, 10_000),
        // account 2: 1000 + 0.5 = 1000.5 -> both tiers
        fill(1_100, 2, UsdtM, true, 1_000),
        FillRecord {
            notional: USDT / 2,
            ..fill(1_200, 2, UsdtM, true, 0)
        },
        // account 3: only excluded fills -> not listed at all
        fill(1_100, 3, UsdcM, true, 9_000),
        // account 4: 500 USDT minus 1 raw unit -> listed, no tier
        FillRecord {
            notional: 500 * USDT - 1,
            ..fill(1_100, 4, UsdtM, true, 0)
        },
    ];
    let got = compute_volume(fills.iter(), &params()).unwrap();
    // account 1: 300 + 200 = 500 == share threshold -> share reached, draw not.
    // account 11's 20_000 is not added to account 1.
    assert_eq!(
        got,
        vec![
            AccountVolume {
                account: 1,
                volume: 500 * USDT,
                reached_share: true,
                reached_draw: false
            },
            AccountVolume {
                account: 2,
                volume: 1_000 * USDT + USDT / 2,
                reached_share: true,
                reached_draw: true
            },
            AccountVolume {
                account: 4,
                volume: 500 * USDT - 1,
                reached_share: false,
                reached_draw: false
            },
        ]
    );
}

#[test]
fn draw_threshold_reached_exactly() {
    // 600 + 400 = 1000 == draw threshold -> reached (>=).
    let fills = [
        fill(1_000, 7, ContractFamily::UsdtM, true, 600),
        fill(1_001, 7, ContractFamily::UsdtM, true, 400),
    ];
    let got = compute_volume(fills, &params()).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].reached_share && got[0].reached_draw);
}

#[test]
fn empty_window_counts_nothing() {
    let p = VolumeParams {
        start_ns: 1_500,
        end_ns: 1_500,
        ..params()
    };
    let fills = [fill(1_500, 1, ContractFamily::UsdtM, true, 5_000)];
    assert_eq!(compute_volume(fills, &p).unwrap(), vec![]);
}

#[test]
fn volume_rejects_bad_input() {
    let p = VolumeParams {
        start_ns: 2,
        end_ns: 1,
        ..params()
    };
    assert_eq!(
        compute_volume(Vec::<FillRecord>::new(), &p),
        Err(CampaignError::InvalidWindow {
            start_ns: 2,
            end_ns: 1
        })
    );
    let p = VolumeParams {
        share_threshold: -1,
        ..params()
    };
    assert!(matches!(
        compute_volume(Vec::<FillRecord>::new(), &p),
        Err(CampaignError::NegativeThreshold {
            name: "share_threshold",
            value: -1
        })
    ));
    // negative notional, even on a fill that would not be counted (index 1)
    let fills = [
        fill(1_000, 1, ContractFamily::UsdtM, true, 1),
        fill(1_000, 1, ContractFamily::CoinM, true, -1),
    ];
    assert_eq!(
        compute_volume(fills, &params()),
        Err(CampaignError::NegativeNotional {
            index: 1,
            account: 1,
            notional: -USDT
        })
    );
    // self parent
    assert_eq!(
        compute_volume([sub(1_000, 5, 5, 1)], &params()),
        Err(CampaignError::SelfParent {
            index: 0,
            account: 5
        })
    );
    // account 5 first main, then claimed as sub of 9
    let fills = [
        fill(1_000, 5, ContractFamily::UsdtM, true, 1),
        sub(1_001, 5, 9, 1),
    ];
    assert_eq!(
        compute_volume(fills, &params()),
        Err(CampaignError::InconsistentParent {
            index: 1,
            account: 5,
            first: None,
            second: Some(9)
        })
    );
    // overflow
    let big = FillRecord {
        notional: i128::MAX,
        ..fill(1_000, 5, ContractFamily::UsdtM, true, 0)
    };
    assert_eq!(
        compute_volume([big, big], &params()),
        Err(CampaignError::VolumeOverflow { account: 5 })
    );
}

// ------------------------------------------------------------------ draw ----------

#[test]
fn hash_letters_removed_digits_kept_in_order() {
    // "0x ab 12 cd 345" -> letters a,b,c,d dropped -> "12345"
    assert_eq!(draw("0xab12cd345").as_str(), "12345");
    assert_eq!(draw("0XAB12CD345").as_str(), "12345");
    // no prefix is fine too
    assert_eq!(draw("f00d").as_str(), "00");
}

#[test]
fn non_hex_hash_rejected() {
    assert_eq!(
        DrawNumber::from_block_hash("0xzz12"),
        Err(CampaignError::NonHexHash { offset: 2, ch: 'z' })
    );
    assert_eq!(
        DrawNumber::from_block_hash("12 34"),
        Err(CampaignError::NonHexHash { offset: 2, ch: ' ' })
    );
    assert_eq!(
        DrawNumber::from_block_hash("0x0x12"),
        Err(CampaignError::NonHexHash { offset: 3, ch: 'x' })
    );
    assert_eq!(
        DrawNumber::from_block_hash("12é"),
        Err(CampaignError::NonHexHash {
            offset: 2, ch: 'é'
        })
    );
    assert_eq!(
        DrawNumber::from_block_hash("0x"),
        Err(CampaignError::EmptyHash)
    );
    assert_eq!(
        DrawNumber::from_block_hash(""),
        Err(CampaignError::EmptyHash)
    );
    // all letters: valid hex but no digits
    assert_eq!(
        DrawNumber::from_block_hash("0xabcdef"),
        Err(CampaignError::NoDigitsInHash)
    );
}

#[test]
fn full_length_hash_levels() {
    // Bitcoin genesis block hash. Digits in order:
    // 000000000019668908516583193476346261723160826 (45 digits), last 10 = 1723160826.
    let d = draw("0x000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
    assert_eq!(d.as_str(), "000000000019668908516583193476346261723160826");
    // 1723160826: all 10 digits equal -> level 10
    // 9723160826: last 9 "723160826" equal, then 9 != 1 -> level 9
    // 0000160826: last 6 "160826" equal, then 0 != 3 -> level 6
    // 0000000826: last 4 "0826" equal, then 0 != 6 -> level 4
    // 0000000026: last 2 "26" equal, then 0 != 8 -> level 2
    // 0000000005: 5 != 6 -> level 0
    let candidates = [5, 26, 826, 160_826, 1_723_160_826, 9_723_160_826];
    let w = select_winners(&d, candidates, 4).unwrap();
    assert_eq!(
        ids(&w),
        vec![
            (1_723_160_826, 10),
            (9_723_160_826, 9),
            (160_826, 6),
            (826, 4)
        ]
    );
    assert_eq!(w[0].account_digits, "1723160826");
    assert_eq!(w[3].account_digits, "0000000826");
    assert_eq!(
        w.iter().map(|w| w.rank).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn ties_within_a_level_lower_id_first() {
    // draw number "12345"
    // 0000002345: 5,4,3,2 equal, 0 != 1 -> level 4
    // 0000001345: 5,4,3 equal, 1 != 2 -> level 3
    // 0000007345: 5,4,3 equal, 7 != 2 -> level 3
    // 0000000015: 5 equal, 1 != 4 -> level 1
    let d = draw("0xab12cd345");
    let candidates = [7_345, 15, 2_345, 1_345];
    let w = select_winners(&d, candidates, 3).unwrap();
    assert_eq!(ids(&w), vec![(2_345, 4), (1_345, 3), (7_345, 3)]);
    // With only 2 seats the level-3 tie is broken by id: 1345 wins, 7345 does not.
    let w = select_winners(&d, candidates, 2).unwrap();
    assert_eq!(ids(&w), vec![(2_345, 4), (1_345, 3)]);
}

#[test]
fn draw_number_shorter_than_ten_digits() {
    // "a1b2c3" -> draw number "123" (3 digits): no level above 3 can match.
    // 0000000123 -> level 3 (all 3 draw digits equal; capped)
    // 0000001123 -> level 3 (capped even though it "looks" like more)
    // 9990000123 -> level 3 (capped)
    // 0000000023 -> 3,2 equal, 0 != 1 -> level 2
    // 0000000004 -> level 0
    let d = draw("a1b2c3");
    assert_eq!(d.as_str(), "123");
    assert_eq!(match_level(&d, 9_990_000_123), Ok(3));
    let w = select_winners(&d, [4, 23, 9_990_000_123, 1_123, 123], 4).unwrap();
    assert_eq!(
        ids(&w),
        vec![(123, 3), (1_123, 3), (9_990_000_123, 3), (23, 2)]
    );
    // one-digit draw number "7": only level 1 exists.
    let d = draw("abcdef7");
    assert_eq!(match_level(&d, 7_777_777_777), Ok(1));
    assert_eq!(match_level(&d, 8), Ok(0));
}

#[test]
fn fewer_candidates_than_winners_all_win_level_zero_last() {
    // draw "12345"; candidates and levels:
    // 1345 -> 3, 7345 -> 3, 15 -> 1, 8 -> 0, 99 -> 0
    // N = 10 > 5 candidates: all win; level-0 accounts after level 1, ascending id.
    let d = draw("12345");
    let w = select_winners(&d, [99, 15, 7_345, 1_345, 8], 10).unwrap();
    assert_eq!(
        ids(&w),
        vec![(1_345, 3), (7_345, 3), (15, 1), (8, 0), (99, 0)]
    );
}

#[test]
fn zero_winners_and_duplicates() {
    let d = draw("12345");
    assert_eq!(select_winners(&d, [5, 5, 5], 0).unwrap(), vec![]);
    // duplicates collapse: 5 wins once (level 1)
    assert_eq!(
        ids(&select_winners(&d, [5, 5, 5], 3).unwrap()),
        vec![(5, 1)]
    );
}

#[test]
fn account_id_above_ten_digits_rejected() {
    let d = draw("12345");
    assert_eq!(
        select_winners(&d, [1, 10_000_000_000], 1),
        Err(CampaignError::AccountIdTooLarge {
            account: 10_000_000_000
        })
    );
    // 9,999,999,999 is the largest allowed id
    assert_eq!(match_level(&d, 9_999_999_999), Ok(0));
}

// ---------------------------------------------------------------- report ----------

fn sample() -> (Vec<FillRecord>, CampaignParams) {
    use ContractFamily::{CoinM, UsdtM};
    let fills = vec![
        // 7345: 1000 + 234.5 = 1234.5 -> share + draw, level 3 vs "12345"
        fill(1_000, 7_345, UsdtM, true, 1_000),
        FillRecord {
            notional: 234 * USDT + USDT / 2,
            ..fill(1_100, 7_345, UsdtM, true, 0)
        },
        // 1345: 2000 -> share + draw, level 3
        fill(1_200, 1_345, UsdtM, true, 2_000),
        // 15: 1000 -> share + draw, level 1
        fill(1_300, 15, UsdtM, true, 1_000),
        // 42: 600 -> share only (not in the draw)
        fill(1_400, 42, UsdtM, true, 600),
        // 12345 would be level 5 but trades coin-M only -> absent
        fill(1_500, 12_345, CoinM, true, 50_000),
        // 2345 is a sub-account of 42 -> absent, and 42 stays at 600
        sub(1_600, 2_345, 42, 50_000),
    ];
    let params = CampaignParams {
        volume: params(),
        block_hash: "0xab12cd345".to_owned(),
        winners: 2,
    };
    (fills, params)
}

#[test]
fn end_to_end_table_is_exact() {
    let (fills, p) = sample();
    let r = run_campaign(&fills, &p).unwrap();
    let expected = "\
CAMPAIGN AUDIT
window_ns        [1000, 2000)
share_threshold  500 USDT
draw_threshold   1000 USDT
block_hash       0xab12cd345
draw_number      12345
winners          2 drawn of 2 requested, 3 draw-eligible

ACCOUNTS
ACCOUNT  VOLUME_USDT  SHARE  DRAW
-------  -----------  -----  ----
     15         1000  yes    yes
     42          600  yes    no
   1345         2000  yes    yes
   7345       1234.5  yes    yes

WINNERS
RANK  ACCOUNT  DIGITS      LEVEL
----  -------  ----------  -----
   1     1345  0000001345      3
   2     7345  0000007345      3
";
    assert_eq!(r.render_table(), expected);
}

#[test]
fn end_to_end_json_is_exact() {
    let (fills, p) = sample();
    let r = run_campaign(&fills, &p).unwrap();
    let expected = r#"{
  "window_start_ns": 1000,
  "window_end_ns": 2000,
  "share_threshold": "500",
  "draw_threshold": "1000",
  "block_hash": "0xab12cd345",
  "draw_number": "12345",
  "winners_requested": 2,
  "draw_eligible": 3,
  "accounts": [
    {
      "account": 15,
      "volume": "1000",
      "reached_share": true,
      "reached_draw": true
    },
    {
      "account": 42,
      "volume": "600",
      "reached_share": true,
      "reached_draw": false
    },
    {
      "account": 1345,
      "volume": "2000",
      "reached_share": true,
      "reached_draw": true
    },
    {
      "account": 7345,
      "volume": "1234.5",
      "reached_share": true,
      "reached_draw": true
    }
  ],
  "winners": [
    {
      "rank": 1,
      "account": 1345,
      "account_digits": "0000001345",
      "level": 3
    },
    {
      "rank": 2,
      "account": 7345,
      "account_digits": "0000007345",
      "level": 3
    }
  ]
}
"#;
    assert_eq!(r.to_json().unwrap(), expected);
}

#[test]
fn same_input_same_bytes_regardless_of_fill_order() {
    let (mut fills, p) = sample();
    let a = run_campaign(&fills, &p).unwrap();
    fills.reverse();
    let b = run_campaign(&fills, &p).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.render_table(), b.render_table());
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
}

#[test]
fn end_to_end_errors() {
    let (fills, mut p) = sample();
    p.block_hash = "0xnothex".to_owned();
    assert_eq!(
        run_campaign(&fills, &p),
        Err(CampaignError::NonHexHash { offset: 2, ch: 'n' })
    );
    // a draw-eligible main account with an 11-digit id is an error ...
    let (mut fills, p) = sample();
    fills.push(fill(
        1_000,
        10_000_000_000,
        ContractFamily::UsdtM,
        true,
        1_000,
    ));
    assert_eq!(
        run_campaign(&fills, &p),
        Err(CampaignError::AccountIdTooLarge {
            account: 10_000_000_000
        })
    );
    // ... but one below the draw threshold is just listed.
    let (mut fills, p) = sample();
    fills.push(fill(
        1_000,
        10_000_000_000,
        ContractFamily::UsdtM,
        true,
        999,
    ));
    let r = run_campaign(&fills, &p).unwrap();
    assert_eq!(r.accounts.last().map(|a| a.account), Some(10_000_000_000));
}
