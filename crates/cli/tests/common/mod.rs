//! Helpers shared by the CLI's integration tests (each test file that needs them says
//! `mod common;`).

use rand::{Rng, SeedableRng};

/// A scenario on the default config (BTCUSDT: tick 0.1, lot 0.001): 20 funded accounts,
/// then limit orders around a drifting mark, cancels and mark moves.
pub fn scenario(lines: usize) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mut s = String::from("{\"cmd\":\"config\",\"default\":true}\n");
    for a in 1..=20 {
        s += &format!("{{\"cmd\":\"create_account\",\"ts\":1,\"account\":{a}}}\n");
        s += &format!("{{\"cmd\":\"deposit\",\"ts\":1,\"account\":{a},\"asset\":\"USDT\",\"amount\":\"100000\"}}\n");
    }
    let mut mark: i64 = 600_000; // ticks of 0.1
    s += &format!(
        "{{\"cmd\":\"mark\",\"ts\":1,\"symbol\":\"BTCUSDT\",\"price\":\"{}.{}\"}}\n",
        mark / 10,
        mark % 10
    );
    for id in 1..lines as u64 {
        match rng.gen_range(0..10) {
            0 => {
                mark += rng.gen_range(-300..=300);
                s += &format!(
                    "{{\"cmd\":\"mark\",\"ts\":1,\"symbol\":\"BTCUSDT\",\"price\":\"{}.{}\"}}\n",
                    mark / 10,
                    mark % 10
                );
            }
            1 => {
                let a = rng.gen_range(1..=20);
                s += &format!("{{\"cmd\":\"cancel_all\",\"ts\":1,\"account\":{a}}}\n");
            }
            _ => {
                let a = rng.gen_range(1..=20);
                let side = if rng.gen_bool(0.5) { "buy" } else { "sell" };
                let p = mark + rng.gen_range(-500..=500);
                let q = rng.gen_range(1..500);
                s += &format!(
                    "{{\"cmd\":\"order\",\"ts\":1,\"account\":{a},\"symbol\":\"BTCUSDT\",\"id\":{id},\"side\":\"{side}\",\"price\":\"{}.{}\",\"qty\":\"0.{:03}\"}}\n",
                    p / 10,
                    p % 10,
                    q
                );
            }
        }
    }
    s
}
