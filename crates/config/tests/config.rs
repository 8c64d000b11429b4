//! Integration tests of perpcore-config: the default config, the Binance CSV (with its
//! duplicate blocks), every validation rule by field path, TOML/JSON equivalence, and a
//! never-panics property. Reads only the copies under `crates/config/data` (embedded).

use perpcore_config::*;
use perpcore_types::{
    bracket_cums, AssetId, Config, ContractKind, InstrumentId, MarginConvention, Money, Price, Qty,
    QtyLots, Rate,
};

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}
fn r(s: &str) -> Rate {
    Rate::parse(s).unwrap()
}
fn default_file() -> ConfigFile {
    ConfigFile::from_toml_str(DEFAULT_TOML).unwrap()
}

mod default {
    use super::*;

    #[test]
    fn loads_with_four_instruments_and_five_assets() {
        let c = default_config();
        let syms: Vec<&str> = c.assets.iter().map(|a| a.symbol.as_str()).collect();
        assert_eq!(syms, ["USDT", "USDC", "BTC", "ETH", "SOL"]);
        let syms: Vec<&str> = c.instruments.iter().map(|i| i.symbol.as_str()).collect();
        assert_eq!(syms, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDC"]);
        for (j, i) in c.instruments.iter().enumerate() {
            assert_eq!(i.id, InstrumentId(j as u32));
            assert_eq!(i.kind, ContractKind::Linear);
            assert_eq!(i.settle_asset, i.quote_asset);
            assert_eq!(i.price_band, r("0.05"));
            assert!(!i.fee_to_close);
            assert_eq!(i.convention, MarginConvention::Binance, "the default");
        }
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn btcusdt_parameters() {
        let c = default_config();
        let b = c.instrument_by_symbol("BTCUSDT").unwrap();
        assert_eq!(b.base_asset, AssetId(2));
        assert_eq!(b.quote_asset, AssetId(0));
        assert_eq!(b.tick_size, Price::parse("0.1").unwrap());
        assert_eq!(b.lot_size, Qty::parse("0.001").unwrap());
        assert_eq!(b.min_qty, QtyLots(1));
        assert_eq!(b.max_qty, QtyLots(1_000_000));
        assert_eq!(b.max_leverage, 150);
        assert_eq!(b.brackets.len(), 12);
        assert_eq!(b.brackets[1].cum, m("300"), "bracket 2 cum");
        assert_eq!(b.brackets[1].notional_floor, m("300000"));
        assert_eq!(b.maker_fee, r("0.0002"));
        assert_eq!(b.taker_fee, r("0.0005"));
        assert_eq!(b.liquidation_fee, r("0.0125"));
        let usdc = c.instrument_by_symbol("BTCUSDC").unwrap();
        assert_eq!(usdc.settle_asset, c.asset_by_symbol("USDC").unwrap().id);
    }

    #[test]
    fn brackets_equal_the_first_csv_block() {
        let table = load_binance_brackets_csv(BINANCE_USDM_BRACKETS_CSV).unwrap();
        let c = default_config();
        for i in &c.instruments {
            let kept = table.get(&i.symbol).unwrap();
            assert_eq!(i.brackets, kept.brackets, "{}", i.symbol);
            assert_eq!(
                i.max_leverage, kept.brackets[0].max_leverage,
                "{}",
                i.symbol
            );
        }
    }

    #[test]
    fn solusdt_filters_equal_the_symbols_json() {
        let json = load_binance_symbols_json(BINANCE_USDM_SYMBOLS_JSON).unwrap();
        assert_eq!(json.len(), 256);
        let f = json["SOLUSDT"];
        let sol = default_config()
            .instrument_by_symbol("SOLUSDT")
            .unwrap()
            .clone();
        assert_eq!(sol.tick_size, f.tick_size);
        assert_eq!(sol.lot_size, f.lot_size);
        assert_eq!(sol.qty_of(sol.min_qty), f.min_qty);
        // BTCUSDT, ETHUSDT, BTCUSDC are not in that file (see PROVENANCE.md).
        for s in ["BTCUSDT", "ETHUSDT", "BTCUSDC"] {
            assert!(!json.contains_key(s), "{s}");
        }
    }
}

mod csv {
    use super::*;

    #[test]
    fn full_csv_loads_903_symbols_and_reports_4_duplicate_blocks() {
        let t = load_binance_brackets_csv(BINANCE_USDM_BRACKETS_CSV).unwrap();
        assert_eq!(t.rows, 7276);
        assert_eq!(t.blocks, 907);
        assert_eq!(t.len(), 903);
        for d in &t.duplicates {
            println!(
                "duplicate block: {} block {} (csv line {}), {} brackets, first max_leverage {}; kept block {}",
                d.symbol,
                d.block,
                d.line,
                d.brackets.len(),
                d.brackets[0].max_leverage,
                d.kept_block
            );
        }
        let dups: Vec<&str> = t.duplicates.iter().map(|d| d.symbol.as_str()).collect();
        assert_eq!(dups, ["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT"]);
        for d in &t.duplicates {
            assert_eq!(d.brackets.len(), 8);
            assert_eq!(d.brackets[0].max_leverage, 50);
            assert_eq!(t.get(&d.symbol).unwrap().block, d.kept_block);
            assert!(d.block > d.kept_block);
        }
        assert_eq!(
            t.duplicates.iter().map(|d| d.block).collect::<Vec<_>>(),
            [
                t.get("BTCUSDT").unwrap().block + 1,
                t.get("BTCUSDT").unwrap().block + 2,
                t.get("ETHUSDT").unwrap().block + 1,
                t.get("ETHUSDT").unwrap().block + 2
            ]
        );
        // The kept BTCUSDT block is the perpetual: 12 brackets, 150x, cum 0/300/1500/…
        let btc = t.get("BTCUSDT").unwrap();
        assert_eq!(btc.brackets.len(), 12);
        assert_eq!(btc.brackets[0].max_leverage, 150);
        let cums: Vec<Money> = btc.brackets.iter().take(3).map(|b| b.cum).collect();
        assert_eq!(cums, [m("0"), m("300"), m("1500")]);
    }

    #[test]
    fn csv_cum_column_agrees_with_bracket_cums() {
        let t = load_binance_brackets_csv(BINANCE_USDM_BRACKETS_CSV).unwrap();
        for x in &t.cum_mismatches {
            println!(
                "cum mismatch: {} block {} bracket {} (csv line {}): csv {} computed {}",
                x.symbol, x.block, x.bracket, x.line, x.csv_cum, x.computed_cum
            );
        }
        println!(
            "{} cum mismatches over {} rows",
            t.cum_mismatches.len(),
            t.rows
        );
        assert!(t.cum_mismatches.is_empty());
        // And the kept cums are what bracket_cums computes.
        for s in &t.symbols {
            let pairs: Vec<_> = s
                .brackets
                .iter()
                .map(|b| (b.notional_floor, b.mmr))
                .collect();
            let cums: Vec<_> = s.brackets.iter().map(|b| b.cum).collect();
            assert_eq!(cums, bracket_cums(&pairs), "{}", s.symbol);
        }
    }

    #[test]
    fn a_cum_mismatch_is_reported_not_fatal() {
        let text =
            "symbol,bracket,notional_floor,notional_cap,maint_margin_ratio,max_leverage,cum\n\
                    X,1,0,100,0.01,50,0.0\n\
                    X,2,100,200,0.02,25,1.5\n";
        let t = load_binance_brackets_csv(text).unwrap();
        assert_eq!(t.cum_mismatches.len(), 1);
        let x = &t.cum_mismatches[0];
        assert_eq!((x.bracket, x.line), (2, 3));
        assert_eq!((x.csv_cum, x.computed_cum), (m("1.5"), m("1")));
        assert_eq!(t.get("X").unwrap().brackets[1].cum, m("1"));
    }

    #[test]
    fn bad_csv_errors_name_line_and_column() {
        let head =
            "symbol,bracket,notional_floor,notional_cap,maint_margin_ratio,max_leverage,cum\n";
        let cases = [
            ("X,2,0,100,0.01,50,0\n", "csv line 2.bracket"),
            (
                "X,1,0,100,0.01,50,0\nY,2,100,200,0.02,25,1\n",
                "csv line 3.bracket",
            ),
            (
                "X,1,0,100,0.01,50,0\nX,3,100,200,0.02,25,1\n",
                "csv line 3.bracket",
            ),
            ("X,1,0,100,abc,50,0\n", "csv line 2.maint_margin_ratio"),
            (
                "X,1,0,100,0.01,50,0\nX,2,150,200,0.02,25,1\n",
                "csv line 3.notional_floor",
            ),
            (
                "X,1,0,100,0.01,50,0\nX,2,100,200,0.005,25,1\n",
                "csv line 3.maint_margin_ratio",
            ),
            ("X,1,0,100,0.01,-5,0\n", "csv line 2.max_leverage"),
            ("X,1,0,100,0.03,50,0\n", "csv line 2.maint_margin_ratio"),
        ];
        for (body, field) in cases {
            let e = load_binance_brackets_csv(&format!("{head}{body}")).unwrap_err();
            assert_eq!(e.field, field, "{body:?}: {e}");
        }
        let e = load_binance_brackets_csv("symbol,bracket\nX,1\n").unwrap_err();
        assert_eq!(e.field, "csv header");
    }

    #[test]
    fn fill_brackets_builds_instruments_from_the_table() {
        let table = load_binance_brackets_csv(BINANCE_USDM_BRACKETS_CSV).unwrap();
        let mut f = default_file();
        for i in &mut f.instruments {
            i.brackets.clear();
            i.max_leverage = None;
        }
        fill_brackets(&mut f, &table).unwrap();
        assert_eq!(config_from_file(&f).unwrap(), default_config());

        f.instruments[0].symbol = "NOSUCHUSDT".into();
        f.instruments[0].brackets.clear();
        let e = fill_brackets(&mut f, &table).unwrap_err();
        assert_eq!(e.field, "instruments[0].brackets");
    }

    #[test]
    fn csv_line_numbers_are_right_with_crlf_line_ends() {
        let text =
            "symbol,bracket,notional_floor,notional_cap,maint_margin_ratio,max_leverage,cum\r\n\
                    X,1,0,100,0.01,50,0.0\r\n\
                    X,2,100,200,0.02,25,1.5\r\n\
                    Y,1,0,100,0.01,50,0.0\r\n";
        let t = load_binance_brackets_csv(text).unwrap();
        let lines: Vec<u64> = t.symbols.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4]);
        assert_eq!(t.cum_mismatches[0].line, 3);
        // The real file: the second BTCUSDT block starts on line 1394.
        let t = load_binance_brackets_csv(BINANCE_USDM_BRACKETS_CSV).unwrap();
        assert_eq!(t.get("BTCUSDT").unwrap().line, 1382);
        assert_eq!(t.duplicates[0].line, 1394);
    }
}

mod validation {
    use super::*;

    fn inverse(f: &mut ConfigFile, cv: &str, settle: &str) {
        let i = &mut f.instruments[0];
        i.kind = KindFile::Inverse;
        i.contract_value = Some(cv.into());
        i.settle = Some(settle.into());
    }

    type Case = (&'static str, &'static str, fn(&mut ConfigFile));

    #[test]
    fn each_rule_names_its_field() {
        let cases: &[Case] = &[
            ("unknown base", "instruments[1].base", |f| {
                f.instruments[1].base = "DOGE".into()
            }),
            ("unknown quote", "instruments[1].quote", |f| {
                f.instruments[1].quote = "EUR".into()
            }),
            ("unknown settle", "instruments[1].settle", |f| {
                f.instruments[1].settle = Some("EUR".into())
            }),
            ("duplicate asset", "assets[4].symbol", |f| {
                f.assets[4].symbol = "USDT".into()
            }),
            ("empty asset symbol", "assets[1].symbol", |f| {
                f.assets[1].symbol = String::new()
            }),
            ("duplicate instrument", "instruments[3].symbol", |f| {
                f.instruments[3].symbol = "BTCUSDT".into()
            }),
            ("tick zero", "instruments[0].tick_size", |f| {
                f.instruments[0].tick_size = "0".into()
            }),
            ("tick negative", "instruments[0].tick_size", |f| {
                f.instruments[0].tick_size = "-0.1".into()
            }),
            ("tick too precise", "instruments[0].tick_size", |f| {
                f.instruments[0].tick_size = "0.000000001".into()
            }),
            ("tick not a number", "instruments[0].tick_size", |f| {
                f.instruments[0].tick_size = "abc".into()
            }),
            ("no open orders", "instruments[0].max_open_orders", |f| {
                f.instruments[0].max_open_orders = Some(0)
            }),
            (
                "too many open orders",
                "instruments[0].max_open_orders",
                |f| f.instruments[0].max_open_orders = Some(10_001),
            ),
            ("lot zero", "instruments[0].lot_size", |f| {
                f.instruments[0].lot_size = "0".into()
            }),
            ("lot negative", "instruments[0].lot_size", |f| {
                f.instruments[0].lot_size = "-1".into()
            }),
            ("lot below 0.0001 quantum", "instruments[0].lot_size", |f| {
                f.instruments[0].lot_size = "0.00005".into()
            }),
            ("min above max", "instruments[0].min_qty", |f| {
                f.instruments[0].min_qty = "2000".into()
            }),
            ("min zero", "instruments[0].min_qty", |f| {
                f.instruments[0].min_qty = "0".into()
            }),
            ("min not a lot multiple", "instruments[0].min_qty", |f| {
                f.instruments[0].min_qty = "0.0015".into()
            }),
            ("max not a lot multiple", "instruments[0].max_qty", |f| {
                f.instruments[0].max_qty = "1000.0005".into()
            }),
            ("max_leverage zero", "instruments[0].max_leverage", |f| {
                f.instruments[0].max_leverage = Some(0)
            }),
            ("brackets empty", "instruments[0].brackets", |f| {
                f.instruments[0].brackets.clear()
            }),
            (
                "first floor not 0",
                "instruments[0].brackets[0].floor",
                |f| f.instruments[0].brackets[0].floor = "1".into(),
            ),
            ("not contiguous", "instruments[0].brackets[2].floor", |f| {
                f.instruments[0].brackets[2].floor = "800001".into()
            }),
            (
                "cap not above floor",
                "instruments[0].brackets[0].cap",
                |f| f.instruments[0].brackets[0].cap = "0".into(),
            ),
            (
                "cap absurdly large",
                "instruments[0].brackets[11].cap",
                |f| f.instruments[0].brackets[11].cap = "1000000000000000000".into(),
            ),
            (
                "mmr not increasing",
                "instruments[0].brackets[1].mmr",
                |f| f.instruments[0].brackets[1].mmr = "0.004".into(),
            ),
            ("mmr not below 1", "instruments[0].brackets[11].mmr", |f| {
                f.instruments[0].brackets[11].mmr = "1".into()
            }),
            ("mmr zero", "instruments[0].brackets[0].mmr", |f| {
                f.instruments[0].brackets[0].mmr = "0".into()
            }),
            (
                "mmr not below 1/leverage",
                "instruments[2].brackets[0].mmr",
                |f| f.instruments[2].brackets[0].mmr = "0.01".into(),
            ),
            (
                "bracket leverage not decreasing",
                "instruments[0].brackets[1].max_leverage",
                |f| f.instruments[0].brackets[1].max_leverage = 150,
            ),
            (
                "bracket leverage zero",
                "instruments[0].brackets[11].max_leverage",
                |f| f.instruments[0].brackets[11].max_leverage = 0,
            ),
            (
                "bracket leverage above instrument",
                "instruments[0].brackets[0].max_leverage",
                |f| f.instruments[0].max_leverage = Some(100),
            ),
            (
                "cum given and wrong",
                "instruments[0].brackets[1].cum",
                |f| f.instruments[0].brackets[1].cum = Some("301".into()),
            ),
            ("maker fee at -1%", "instruments[0].maker_fee", |f| {
                f.instruments[0].maker_fee = "-0.01".into()
            }),
            ("taker fee at 5%", "instruments[0].taker_fee", |f| {
                f.instruments[0].taker_fee = "0.05".into()
            }),
            ("price band 0", "instruments[0].price_band", |f| {
                f.instruments[0].price_band = "0".into()
            }),
            ("price band 1", "instruments[0].price_band", |f| {
                f.instruments[0].price_band = "1".into()
            }),
            (
                "liquidation fee negative",
                "instruments[0].liquidation_fee",
                |f| f.instruments[0].liquidation_fee = "-0.001".into(),
            ),
            (
                "liquidation fee 10%",
                "instruments[0].liquidation_fee",
                |f| f.instruments[0].liquidation_fee = "0.1".into(),
            ),
            (
                "inverse contract_value zero",
                "instruments[0].contract_value",
                |f| inverse(f, "0", "BTC"),
            ),
            (
                "inverse contract_value negative",
                "instruments[0].contract_value",
                |f| inverse(f, "-100", "BTC"),
            ),
            (
                "inverse contract_value missing",
                "instruments[0].contract_value",
                |f| {
                    inverse(f, "100", "BTC");
                    f.instruments[0].contract_value = None;
                },
            ),
            (
                "linear with contract_value",
                "instruments[0].contract_value",
                |f| f.instruments[0].contract_value = Some("100".into()),
            ),
            ("linear settling in base", "instruments[0].settle", |f| {
                f.instruments[0].settle = Some("BTC".into())
            }),
            ("inverse settling in quote", "instruments[0].settle", |f| {
                inverse(f, "100", "USDT")
            }),
            ("base equals quote", "instruments[0].quote", |f| {
                f.instruments[0].quote = "BTC".into();
                f.instruments[0].settle = Some("BTC".into());
            }),
            (
                "bybit convention without the fee to close",
                "instruments[0].fee_to_close",
                |f| {
                    f.instruments[0].convention = Some(MarginConvention::Bybit);
                    f.instruments[0].fee_to_close = Some(false);
                },
            ),
        ];
        for (name, field, mutate) in cases {
            let mut f = default_file();
            mutate(&mut f);
            let e = config_from_file(&f).expect_err(name);
            println!("{name}: {e}");
            assert_eq!(e.field, *field, "{name}: {e}");
            // The same error through the text loaders.
            if let Ok(text) = f.to_json_string() {
                assert_eq!(load_json_str(&text).unwrap_err(), e, "{name} via json");
            }
        }
    }

    #[test]
    fn message_format_is_field_colon_message() {
        let mut f = default_file();
        f.instruments[2].brackets[1].mmr = "1.5".into();
        let e = config_from_file(&f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "instruments[2].brackets[1].mmr: 1.5 must be in (0, 1)"
        );
    }

    #[test]
    fn absent_cum_is_computed() {
        let mut f = default_file();
        for b in &mut f.instruments[0].brackets {
            b.cum = None;
        }
        assert_eq!(config_from_file(&f).unwrap(), default_config());
    }

    #[test]
    fn floats_are_refused_with_a_hint() {
        let text = DEFAULT_TOML.replacen("tick_size = \"0.1\"", "tick_size = 0.1", 1);
        let e = load_toml_str(&text).unwrap_err();
        assert_eq!(e.field, "toml");
        assert!(e.message.contains("floats are never parsed"), "{e}");
        let json = file_from_config(&default_config())
            .to_json_string()
            .unwrap();
        let json = json.replacen("\"0.0002\"", "0.0002", 1);
        let e = load_json_str(&json).unwrap_err();
        assert_eq!(e.field, "json");
        assert!(e.message.contains("floats are never parsed"), "{e}");
    }

    /// Issue 13: a repeated key must not silently take the last value, in either format
    /// and at any depth (the top level, an instrument, a bracket).
    #[test]
    fn config_duplicate_key_takes_the_last() {
        let json = file_from_config(&default_config())
            .to_json_string()
            .unwrap();
        for (what, text) in [
            (
                "instrument",
                json.replacen(
                    "\"tick_size\": \"0.1\"",
                    "\"tick_size\": \"0.1\", \"tick_size\": \"0.2\"",
                    1,
                ),
            ),
            (
                "bracket",
                json.replacen(
                    "\"mmr\": \"0.004\"",
                    "\"mmr\": \"0.004\", \"mmr\": \"0.9\"",
                    1,
                ),
            ),
            (
                "top level",
                json.replacen("\"assets\":", "\"instruments\": [], \"assets\":", 1),
            ),
        ] {
            assert_ne!(text, json, "{what}: the edit must apply");
            let e = load_json_str(&text).unwrap_err();
            assert!(e.message.contains("duplicate"), "{what}: {e}");
        }
        let toml = DEFAULT_TOML.replacen(
            "tick_size = \"0.1\"",
            "tick_size = \"0.1\"\ntick_size = \"0.2\"",
            1,
        );
        assert_ne!(toml, DEFAULT_TOML);
        let e = load_toml_str(&toml).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = DEFAULT_TOML.replacen("tick_size = \"0.1\"", "tick = \"0.1\"", 1);
        let e = load_toml_str(&text).unwrap_err();
        assert_eq!(e.field, "toml");
        assert!(e.message.contains("tick"), "{e}");
    }

    #[test]
    fn typed_config_ids_must_be_dense() {
        let mut c = default_config();
        c.instruments[1].id = InstrumentId(7);
        assert_eq!(validate(&c).unwrap_err().field, "instruments[1].id");
        let mut c = default_config();
        c.assets[2].id = AssetId(0);
        assert_eq!(validate(&c).unwrap_err().field, "assets[2].id");
        let mut c = default_config();
        c.instruments[0].base_asset = AssetId(99);
        assert_eq!(validate(&c).unwrap_err().field, "instruments[0].base");
        let mut c = default_config();
        c.instruments[0].brackets[3].cum = m("1");
        assert_eq!(
            validate(&c).unwrap_err().field,
            "instruments[0].brackets[3].cum"
        );
    }

    #[test]
    fn an_inverse_instrument_loads() {
        let text = r#"
            assets = [{ symbol = "BTC" }, { symbol = "USD" }]
            [[instruments]]
            symbol = "BTCUSD_PERP"
            kind = "inverse"
            contract_value = "100"
            base = "BTC"
            quote = "USD"
            tick_size = "0.1"
            lot_size = "1"
            min_qty = "1"
            max_qty = "10000"
            maker_fee = "0.0002"
            taker_fee = "0.0005"
            price_band = "0.05"
            liquidation_fee = "0.015"
            brackets = [
                { floor = "0", cap = "5", max_leverage = 125, mmr = "0.004" },
                { floor = "5", cap = "10", max_leverage = 100, mmr = "0.005" },
            ]
        "#;
        let c = load_toml_str(text).unwrap();
        let i = &c.instruments[0];
        assert_eq!(
            i.kind,
            ContractKind::Inverse {
                contract_value: m("100")
            }
        );
        assert_eq!(i.settle_asset, AssetId(0));
        assert_eq!(i.max_leverage, 125);
        assert_eq!(i.brackets[1].cum, m("0.005"));
        assert!(!i.fee_to_close);
        assert_eq!(i.convention, MarginConvention::Binance);
    }

    /// The convention profile: `convention = "bybit"` implies the fee to close (which an
    /// inverse instrument now takes too); `binance` leaves it to `fee_to_close`; a
    /// written-out config round-trips both.
    #[test]
    fn convention_profiles_and_the_fee_to_close() {
        let mut f = default_file();
        f.instruments[0].convention = Some(MarginConvention::Bybit);
        f.instruments[0].fee_to_close = None;
        f.instruments[1].convention = Some(MarginConvention::Binance);
        f.instruments[1].fee_to_close = Some(true);
        f.instruments[2].fee_to_close = None;
        let c = config_from_file(&f).unwrap();
        let kinds: Vec<(MarginConvention, bool)> = c
            .instruments
            .iter()
            .map(|i| (i.convention, i.fee_to_close))
            .collect();
        assert_eq!(
            kinds,
            [
                (MarginConvention::Bybit, true),
                (MarginConvention::Binance, true),
                (MarginConvention::Binance, false),
                (MarginConvention::Binance, false),
            ]
        );
        assert_eq!(config_from_file(&file_from_config(&c)).unwrap(), c);
        let text = r#"
            assets = [{ symbol = "BTC" }, { symbol = "USD" }]
            [[instruments]]
            symbol = "BTCUSD"
            kind = "inverse"
            contract_value = "1"
            base = "BTC"
            quote = "USD"
            tick_size = "0.5"
            lot_size = "1"
            min_qty = "1"
            max_qty = "1000000"
            maker_fee = "0.0002"
            taker_fee = "0.00055"
            price_band = "0.05"
            liquidation_fee = "0"
            convention = "bybit"
            brackets = [{ floor = "0", cap = "100", max_leverage = 100, mmr = "0.005" }]
        "#;
        let i = &load_toml_str(text).unwrap().instruments[0];
        assert_eq!(
            (i.convention, i.fee_to_close),
            (MarginConvention::Bybit, true)
        );
        let text = text.replace("convention = \"bybit\"", "fee_to_close = true");
        let i = &load_toml_str(&text).unwrap().instruments[0];
        assert_eq!(
            (i.convention, i.fee_to_close),
            (MarginConvention::Binance, true)
        );
        let text = text.replace("fee_to_close = true", "convention = \"okx\"");
        assert!(load_toml_str(&text).is_err(), "unknown convention");
    }
}

mod formats {
    use super::*;

    #[test]
    fn json_and_toml_of_the_same_config_are_equal() {
        let toml_cfg = default_config();
        let file = file_from_config(&toml_cfg);
        let json_cfg = load_json_str(&file.to_json_string().unwrap()).unwrap();
        assert_eq!(json_cfg, toml_cfg);
        let toml_again = load_toml_str(&file.to_toml_string().unwrap()).unwrap();
        assert_eq!(toml_again, toml_cfg);
        let value: serde_json::Value =
            serde_json::from_str(&file.to_json_string().unwrap()).unwrap();
        assert_eq!(load_json_value(&value).unwrap(), toml_cfg);
    }

    #[test]
    fn hand_written_json_equals_hand_written_toml() {
        let toml = r#"
            [[assets]]
            symbol = "USDT"
            [[assets]]
            symbol = "BTC"
            [[instruments]]
            symbol = "BTCUSDT"
            kind = "linear"
            base = "BTC"
            quote = "USDT"
            tick_size = "0.1"
            lot_size = "0.001"
            min_qty = "0.001"
            max_qty = "1000"
            maker_fee = "0.0002"
            taker_fee = "0.0005"
            price_band = "0.05"
            liquidation_fee = "0.0125"
            [[instruments.brackets]]
            floor = "0"
            cap = "50000"
            max_leverage = 125
            mmr = "0.004"
            [[instruments.brackets]]
            floor = "50000"
            cap = "250000"
            max_leverage = 100
            mmr = "0.005"
            cum = "50"
        "#;
        let json = r#"{
            "assets": [{"symbol": "USDT"}, {"symbol": "BTC"}],
            "instruments": [{
                "symbol": "BTCUSDT", "kind": "linear", "base": "BTC", "quote": "USDT",
                "tick_size": "0.1", "lot_size": "0.001", "min_qty": "0.001", "max_qty": "1000",
                "maker_fee": "0.0002", "taker_fee": "0.0005", "price_band": "0.05",
                "liquidation_fee": "0.0125",
                "brackets": [
                    {"floor": "0", "cap": "50000", "max_leverage": 125, "mmr": "0.004"},
                    {"floor": "50000", "cap": "250000", "max_leverage": 100, "mmr": "0.005", "cum": "50"}
                ]
            }]
        }"#;
        let a = load_toml_str(toml).unwrap();
        let b = load_json_str(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.instruments[0].brackets[1].cum, m("50"));
        assert_eq!(a.instruments[0].max_leverage, 125);
    }

    #[test]
    fn load_path_picks_the_format_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("c.toml");
        std::fs::write(&toml, DEFAULT_TOML).unwrap();
        assert_eq!(load_path(&toml).unwrap(), default_config());
        let json = dir.path().join("c.JSON");
        let text = file_from_config(&default_config())
            .to_json_string()
            .unwrap();
        std::fs::write(&json, text).unwrap();
        assert_eq!(load_path(&json).unwrap(), default_config());
        let other = dir.path().join("c.yaml");
        std::fs::write(&other, "").unwrap();
        assert!(load_path(&other).unwrap_err().message.contains("extension"));
        let missing = dir.path().join("missing.toml");
        assert!(load_path(&missing).is_err());
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, DEFAULT_TOML.replacen("\"0.0125\"", "\"0.2\"", 1)).unwrap();
        let e = load_path(&bad).unwrap_err();
        assert!(
            e.field
                .ends_with("bad.toml: instruments[0].liquidation_fee"),
            "{e}"
        );
    }

    #[test]
    fn empty_documents_give_an_empty_config() {
        let empty = Config {
            assets: vec![],
            instruments: vec![],
        };
        assert_eq!(load_toml_str("").unwrap(), empty);
        assert_eq!(load_json_str("{}").unwrap(), empty);
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn decimalish() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{0,40}(\\.[0-9]{0,16})?",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
            Just("170141183460469231731687303715884105727".to_string()),
            Just("-170141183460469231731687303715884105728".to_string()),
            Just("99999999999999999999999999.9999999999".to_string()),
            Just("0.00000000000000000000000000001".to_string()),
            Just("NaN".to_string()),
            Just(" 1 ".to_string()),
            ".{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(perpcore_testkit::prop::config(512))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = load_toml_str(&text);
            let _ = load_json_str(&text);
            let _ = load_binance_brackets_csv(&text);
            let _ = load_binance_symbols_json(&text);
        }

        #[test]
        fn csv_like_text_never_panics(
            lines in proptest::collection::vec(
                ("[A-Z]{1,3}", 0u32..4, decimalish(), decimalish(), decimalish(), 0u32..200, decimalish()),
                0..8,
            )
        ) {
            let mut text = String::from(
                "symbol,bracket,notional_floor,notional_cap,maint_margin_ratio,max_leverage,cum\n",
            );
            for (s, b, f, c, mmr, l, cum) in lines {
                text.push_str(&format!("{s},{b},{f},{c},{mmr},{l},{cum}\n"));
            }
            let _ = load_binance_brackets_csv(&text);
        }

        #[test]
        fn any_field_value_never_panics(
            field in 0usize..18,
            inst in 0usize..4,
            bracket in 0usize..10,
            value in decimalish(),
            lev in any::<u32>(),
        ) {
            let mut f = default_file();
            let i = &mut f.instruments[inst];
            let b = bracket.min(i.brackets.len() - 1);
            match field {
                0 => i.tick_size = value,
                1 => i.lot_size = value,
                2 => i.min_qty = value,
                3 => i.max_qty = value,
                4 => i.maker_fee = value,
                5 => i.taker_fee = value,
                6 => i.price_band = value,
                7 => i.liquidation_fee = value,
                8 => { i.kind = KindFile::Inverse; i.contract_value = Some(value); i.settle = None; }
                9 => i.brackets[b].floor = value,
                10 => i.brackets[b].cap = value,
                11 => i.brackets[b].mmr = value,
                12 => i.brackets[b].cum = Some(value),
                13 => i.brackets[b].max_leverage = lev,
                14 => i.max_leverage = Some(lev),
                15 => { i.brackets[b].floor = value.clone(); i.brackets[b].cap = value; }
                16 => { for x in &mut i.brackets { x.cum = None; } i.brackets[b].cap = value; }
                _ => { i.lot_size = value.clone(); i.min_qty = value.clone(); i.max_qty = value; }
            }
            if let Ok(c) = config_from_file(&f) {
                // Whatever passes must also pass the typed validator and round-trip.
                prop_assert_eq!(validate(&c), Ok(()));
                prop_assert_eq!(config_from_file(&file_from_config(&c)), Ok(c));
            }
        }
    }
}
