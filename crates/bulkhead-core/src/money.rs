//! Fixed-point money: US dollars as integer micro-dollars.
//!
//! Prices and budgets are written as decimal strings (`"0.15"`) and kept as
//! integers, so sums never drift the way floats do.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of US dollars with six decimal places.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd {
    micros: u64,
}

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a non-negative decimal string with at most 6 decimal places, like \"0.15\"")]
pub struct MoneyError;

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd { micros: 0 };

    /// From micro-dollars.
    pub fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// In micro-dollars.
    pub fn micros(self) -> u64 {
        self.micros
    }

    /// Parses `"12"`, `"0.15"`, `"0.000001"`.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 6
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (s.contains('.') && frac.is_empty())
        {
            return Err(MoneyError);
        }
        let int: u64 = int.parse().map_err(|_| MoneyError)?;
        let frac_micros: u64 = format!("{frac:0<6}").parse().map_err(|_| MoneyError)?;
        int.checked_mul(1_000_000)
            .and_then(|m| m.checked_add(frac_micros))
            .map(Self::from_micros)
            .ok_or(MoneyError)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.micros / 1_000_000;
        let frac = self.micros % 1_000_000;
        if frac == 0 {
            write!(f, "{int}")
        } else {
            let s = format!("{frac:06}");
            write!(f, "{int}.{}", s.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${self}")
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (text, micros, back) in [
            ("0.15", 150_000, "0.15"),
            ("12", 12_000_000, "12"),
            ("0.000001", 1, "0.000001"),
            ("1000.50", 1_000_500_000, "1000.5"),
        ] {
            let u = Usd::parse(text).unwrap();
            assert_eq!(u.micros(), micros);
            assert_eq!(u.to_string(), back);
        }
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "0.1234567",
            "abc",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert_eq!(Usd::parse(bad), Err(MoneyError), "{bad:?}");
        }
    }
}
