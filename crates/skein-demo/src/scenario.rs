//! The scenarios of the checkout-latency story and how often each one happens.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// A few items, a good card: about 200 ms end to end.
    Normal,
    /// A bulk order of thousands of lines: inventory's `SELECT … WHERE sku IN (…)` with one bind
    /// parameter per line scans the unindexed holds table once per line and takes seconds.
    SlowInventory,
    /// Mallory's card is declined by the bank: error spans with exception events, HTTP 402.
    Declined,
    /// A card that needs a 3-D Secure check: the bank stalls the first attempt, order's payment
    /// call times out and is retried (`http.request.resend_count`).
    SlowPayment,
    /// order drops the trace headers on its call to fraud: fraud's spans become an orphan trace.
    BrokenHop,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Normal,
        Scenario::SlowInventory,
        Scenario::Declined,
        Scenario::SlowPayment,
        Scenario::BrokenHop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::SlowInventory => "slow-inventory",
            Scenario::Declined => "declined",
            Scenario::SlowPayment => "slow-payment",
            Scenario::BrokenHop => "broken-hop",
        }
    }

    fn default_share(self) -> f64 {
        match self {
            Scenario::Normal => 0.0, // the remainder
            // Each bulk order burns seconds of CPU in SQLite: 1% of 20/s is one every 5 s.
            Scenario::SlowInventory => 0.01,
            Scenario::Declined | Scenario::SlowPayment => 0.05,
            Scenario::BrokenHop => 0.02,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The share of checkouts each scenario gets; `normal` gets whatever the others leave.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares {
    shares: [f64; 5],
}

impl Default for Shares {
    fn default() -> Self {
        Shares::from_fn(Scenario::default_share)
    }
}

impl Shares {
    fn from_fn(f: impl Fn(Scenario) -> f64) -> Shares {
        let mut shares = Scenario::ALL.map(f);
        shares[0] = (1.0 - shares[1..].iter().sum::<f64>()).max(0.0);
        Shares { shares }
    }

    pub fn share(&self, scenario: Scenario) -> f64 {
        self.shares[scenario as usize]
    }
}

impl fmt::Display for Shares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Scenario::ALL
            .iter()
            .map(|s| format!("{}={:.0}%", s.name(), self.share(*s) * 100.0))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// `--scenario`: a comma-separated list of `name=share` (share as `0.1` or `10%`) or bare
/// names (their default share). Scenarios not listed get 0; `normal` gets the remainder.
/// `all` gives every scenario an equal share; `normal` alone turns the others off.
impl FromStr for Shares {
    type Err = String;

    fn from_str(spec: &str) -> Result<Shares, String> {
        let spec = spec.trim();
        if spec == "all" {
            return Ok(Shares::from_fn(|_| 1.0 / Scenario::ALL.len() as f64));
        }
        let mut given = [0.0; 5];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, share) = match part.split_once('=') {
                Some((n, s)) => (n.trim(), Some(s.trim())),
                None => (part, None),
            };
            let scenario = Scenario::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario `{name}` (known: {}, all)", names.join(", "))
            })?;
            let share = match share {
                None => scenario.default_share(),
                Some(s) => parse_share(s).ok_or_else(|| format!("bad share `{s}` for {name}: use 0.1 or 10%"))?,
            };
            given[scenario as usize] = share;
        }
        let others: f64 = given[1..].iter().sum();
        if others > 1.0 + 1e-9 {
            return Err(format!(
                "scenario shares add up to {:.0}%, more than 100%",
                others * 100.0
            ));
        }
        Ok(Shares::from_fn(|s| given[s as usize]))
    }
}

fn parse_share(s: &str) -> Option<f64> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
}

/// Deterministic interleaving with exact long-run shares (smooth weighted round robin), so a
/// bounded run of N checkouts contains each scenario about share × N times.
pub struct Schedule {
    shares: Shares,
    credit: [f64; 5],
}

impl Schedule {
    pub fn new(shares: Shares) -> Schedule {
        Schedule {
            shares,
            credit: [0.0; 5],
        }
    }

    pub fn next_scenario(&mut self) -> Scenario {
        for (credit, share) in self.credit.iter_mut().zip(self.shares.shares) {
            *credit += share;
        }
        let mut best = 0;
        for i in 1..self.credit.len() {
            if self.credit[i] > self.credit[best] + 1e-9 {
                best = i;
            }
        }
        self.credit[best] -= 1.0;
        Scenario::ALL[best]
    }
}

/// `--rate`: checkouts per second, as `20`, `20/s` or `600/m`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (number, per) = match s.split_once('/') {
        Some((n, unit)) => (
            n,
            match unit.trim() {
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                other => return Err(format!("bad rate unit `{other}` in `{s}`: use /s, /m or /h")),
            },
        ),
        None => (s, 1.0),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad rate `{s}`: expected e.g. 20/s"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("bad rate `{s}`: must be positive"));
    }
    Ok(n / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_default_to_normal_for_the_rest() {
        let s: Shares = "slow-inventory=0.2,declined=10%".parse().unwrap();
        assert_eq!(s.share(Scenario::SlowInventory), 0.2);
        assert_eq!(s.share(Scenario::Declined), 0.1);
        assert_eq!(s.share(Scenario::SlowPayment), 0.0);
        assert!((s.share(Scenario::Normal) - 0.7).abs() < 1e-9);
        let all: Shares = "all".parse().unwrap();
        assert!(Scenario::ALL.iter().all(|x| (all.share(*x) - 0.2).abs() < 1e-9));
        assert_eq!("broken-hop".parse::<Shares>().unwrap().share(Scenario::BrokenHop), 0.02);
        assert!("nope=0.1"
            .parse::<Shares>()
            .unwrap_err()
            .contains("unknown scenario `nope`"));
        assert!("declined=0.7,slow-payment=0.6"
            .parse::<Shares>()
            .unwrap_err()
            .contains("more than 100%"));
        assert!("declined=2".parse::<Shares>().unwrap_err().contains("bad share"));
    }

    #[test]
    fn schedule_gives_each_scenario_its_share() {
        let mut schedule = Schedule::new("all".parse().unwrap());
        let picks: Vec<Scenario> = (0..10).map(|_| schedule.next_scenario()).collect();
        for s in Scenario::ALL {
            assert_eq!(picks.iter().filter(|p| **p == s).count(), 2, "{s} in {picks:?}");
        }
        let mut default = Schedule::new(Shares::default());
        let n = (0..1000)
            .filter(|_| default.next_scenario() == Scenario::Declined)
            .count();
        assert_eq!(n, 50);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20/s").unwrap(), 20.0);
        assert_eq!(parse_rate("5").unwrap(), 5.0);
        assert_eq!(parse_rate("600/m").unwrap(), 10.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3/fortnight").unwrap_err().contains("bad rate unit"));
    }
}
