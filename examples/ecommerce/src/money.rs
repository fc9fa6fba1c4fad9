//! Money: an exact, non-negative amount in one of the supported currencies.
//!
//! Catalog prices are in US dollars; conversion uses fixed rates (USD→CAD ×1.32,
//! USD→EUR ×1.19) with exact decimal arithmetic, rounded to cents (half away from zero).

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A supported currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    /// US dollar, `$`; the catalog's currency.
    Usd,
    /// Canadian dollar, `CA$`.
    Cad,
    /// Euro, `€`.
    Eur,
}

impl Currency {
    /// Every supported currency.
    pub const ALL: [Currency; 3] = [Currency::Usd, Currency::Cad, Currency::Eur];

    /// The ISO 4217 code (`USD`, `CAD`, `EUR`).
    pub fn code(self) -> &'static str {
        match self {
            Currency::Usd => "USD",
            Currency::Cad => "CAD",
            Currency::Eur => "EUR",
        }
    }

    /// The display symbol (`$`, `CA$`, `€`).
    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Usd => "$",
            Currency::Cad => "CA$",
            Currency::Eur => "€",
        }
    }

    /// How many units of this currency one US dollar buys.
    pub fn per_usd(self) -> Decimal {
        match self {
            Currency::Usd => Decimal::ONE,
            Currency::Cad => Decimal::new(132, 2),
            Currency::Eur => Decimal::new(119, 2),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a money value or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The currency code is not one of `USD`, `CAD`, `EUR`.
    #[error("unsupported currency code {0:?}: use USD, CAD or EUR")]
    UnsupportedCurrency(String),
    /// Amounts are never negative.
    #[error("an amount cannot be negative (got {0})")]
    Negative(Decimal),
    /// Amounts in two different currencies cannot be combined without a conversion.
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The amount has more than two decimals.
    #[error("amount {0} has more than 2 decimals")]
    TooPrecise(Decimal),
    /// The amount is above [`Money::MAX`].
    #[error("amount {0} is above the largest accepted, 1000000000000")]
    TooLarge(Decimal),
    /// The result does not fit.
    #[error("amount overflow")]
    Overflow,
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, MoneyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or_else(|| MoneyError::UnsupportedCurrency(code.to_owned()))
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for an exact amount (`#[serde(with = "ecommerce::money::amount")]`): written as a
/// JSON number, read from a JSON number or a decimal string, exactly. A number is taken as its
/// shortest decimal form (`19.99` is 19.99, not 19.989999999999998436805981327779591083526611328125),
/// which is what the client wrote for every amount of up to 15 significant digits; larger ones
/// are refused rather than rounded.
pub mod amount {
    use std::fmt;
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// The most significant digits a JSON number carries exactly through an `f64`.
    const EXACT_DIGITS: usize = 15;

    /// Writes `amount` as a JSON number.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(amount: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::float::serialize(amount, serializer)
    }

    /// Reads an amount from a JSON number or a decimal string.
    ///
    /// # Errors
    /// Not a number, or a number with more significant digits than travel exactly.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_any(AmountVisitor)
    }

    struct AmountVisitor;

    impl Visitor<'_> for AmountVisitor {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an amount: a number, or a decimal string such as \"19.99\"")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(value))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Decimal, E> {
            let written = value.to_string();
            let digits = written.chars().filter(char::is_ascii_digit).count()
                - written
                    .trim_start_matches('-')
                    .chars()
                    .take_while(|c| *c == '0' || *c == '.')
                    .filter(|c| *c == '0')
                    .count();
            if !value.is_finite() || digits > EXACT_DIGITS {
                return Err(E::custom(format!(
                    "the amount {value} has more significant digits than a number carries \
                     exactly; send it as a decimal string"
                )));
            }
            Decimal::from_str(&written)
                .map_err(|_| E::custom(format!("the amount {value} is out of range")))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Decimal, E> {
            Decimal::from_str_exact(value.trim())
                .map_err(|_| E::custom(format!("{value:?} is not a decimal amount")))
        }
    }
}

/// An amount ≥ 0 with at most two decimals, in one currency.
///
/// ```
/// use ecommerce::money::{Currency, Money};
/// use rust_decimal::Decimal;
///
/// let price = Money::usd(Decimal::new(1999, 2)).unwrap(); // $19.99
/// let in_cad = price.convert_to(Currency::Cad).unwrap();
/// assert_eq!(in_cad.amount(), Decimal::new(2639, 2)); // 19.99 × 1.32 = 26.3868 → 26.39
/// assert!(price.add(&in_cad).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawMoney")]
pub struct Money {
    #[serde(with = "crate::money::amount")]
    amount: Decimal,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMoney {
    #[serde(with = "crate::money::amount")]
    amount: Decimal,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = MoneyError;

    fn try_from(raw: RawMoney) -> Result<Self, MoneyError> {
        Money::new(raw.amount, raw.currency)
    }
}

impl Money {
    /// The largest amount accepted: a trillion, so that every amount with two decimals has at
    /// most 15 significant digits and travels through a JSON number exactly.
    pub const MAX: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

    /// An amount a client sent: as [`new`](Self::new), and at most [`Money::MAX`]. (Amounts
    /// the app computes, such as totals, are not bounded: what was stored always reads back.)
    ///
    /// # Errors
    /// As [`new`](Self::new); [`MoneyError::TooLarge`] above [`Money::MAX`].
    pub fn accepted(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount > Self::MAX {
            return Err(MoneyError::TooLarge(amount));
        }
        Self::new(amount, currency)
    }

    /// An amount in a currency.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] below zero, [`MoneyError::TooPrecise`] with more than two
    /// decimals.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative(amount));
        }
        if amount.normalize().scale() > 2 {
            return Err(MoneyError::TooPrecise(amount));
        }
        Ok(Money {
            amount: amount.normalize(),
            currency,
        })
    }

    /// An amount in US dollars.
    ///
    /// # Errors
    /// As [`Money::new`].
    pub fn usd(amount: Decimal) -> Result<Self, MoneyError> {
        Money::new(amount, Currency::Usd)
    }

    /// Zero in a currency.
    pub fn zero(currency: Currency) -> Self {
        Money {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// The amount.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The sum of two amounts in the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] across currencies, [`MoneyError::Overflow`].
    pub fn add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            amount,
            currency: self.currency,
        })
    }

    /// This amount times a quantity.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`].
    pub fn times(&self, quantity: u32) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            amount,
            currency: self.currency,
        })
    }

    /// This amount in another currency, through US dollars, rounded to cents.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`].
    pub fn convert_to(&self, target: Currency) -> Result<Money, MoneyError> {
        if self.currency == target {
            return Ok(*self);
        }
        let usd = self
            .amount
            .checked_div(self.currency.per_usd())
            .ok_or(MoneyError::Overflow)?;
        let converted = usd
            .checked_mul(target.per_usd())
            .ok_or(MoneyError::Overflow)?;
        let amount = converted
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            .normalize();
        Ok(Money {
            amount,
            currency: target,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:.2}", self.currency.symbol(), self.amount)
    }
}

/// The cents of an amount (0 to 99).
pub fn cents(amount: Decimal) -> u32 {
    use rust_decimal::prelude::ToPrimitive;
    (amount.abs().fract() * Decimal::ONE_HUNDRED)
        .trunc()
        .to_u32()
        .unwrap_or(0)
        % 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn conversion_is_exact_and_rounded_to_cents() {
        let price = Money::usd(dec("10.05")).unwrap();
        assert_eq!(
            price.convert_to(Currency::Cad).unwrap().amount(),
            dec("13.27")
        ); // 13.266
        assert_eq!(
            price.convert_to(Currency::Eur).unwrap().amount(),
            dec("11.96")
        ); // 11.9595
        assert_eq!(price.convert_to(Currency::Usd).unwrap(), price);
        let cad = Money::new(dec("13.20"), Currency::Cad).unwrap();
        assert_eq!(cad.convert_to(Currency::Usd).unwrap().amount(), dec("10"));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Sent {
        #[serde(with = "crate::money::amount")]
        amount: Decimal,
    }

    fn sent(json: &str) -> Result<Decimal, String> {
        serde_json::from_str::<Sent>(json)
            .map(|sent| sent.amount)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn amounts_are_read_as_written() {
        assert_eq!(sent(r#"{"amount": 19.99}"#), Ok(dec("19.99")));
        assert_eq!(
            sent(r#"{"amount": 999999999999.99}"#),
            Ok(dec("999999999999.99"))
        );
        assert_eq!(sent(r#"{"amount": 0.1}"#), Ok(dec("0.1")));
        assert_eq!(sent(r#"{"amount": 12}"#), Ok(dec("12")));
        assert_eq!(
            sent(r#"{"amount": "1000000000000000.5"}"#),
            Ok(dec("1000000000000000.5"))
        );
        let rounded = sent(r#"{"amount": 1000000000000000.5}"#).unwrap_err();
        assert!(rounded.contains("decimal string"), "{rounded}");
        assert!(sent(r#"{"amount": "12,5"}"#).is_err());
        assert!(sent(r#"{"amount": true}"#).is_err());
        assert_eq!(
            Money::accepted(dec("1000000000000000.5"), Currency::Usd),
            Err(MoneyError::TooLarge(dec("1000000000000000.5")))
        );
        assert!(Money::accepted(Money::MAX, Currency::Usd).is_ok());
        assert_eq!(Money::MAX, dec("1000000000000"));
    }

    #[test]
    fn refuses_negative_imprecise_and_mixed_amounts() {
        assert_eq!(Money::usd(dec("-1")), Err(MoneyError::Negative(dec("-1"))));
        assert!(matches!(
            Money::usd(dec("0.001")),
            Err(MoneyError::TooPrecise(_))
        ));
        let usd = Money::usd(dec("1")).unwrap();
        let eur = Money::new(dec("1"), Currency::Eur).unwrap();
        assert_eq!(
            usd.add(&eur),
            Err(MoneyError::CurrencyMismatch(Currency::Usd, Currency::Eur))
        );
        assert_eq!(usd.add(&usd).unwrap().amount(), dec("2"));
        assert_eq!(usd.times(3).unwrap().amount(), dec("3"));
    }

    #[test]
    fn currencies_parse_from_codes_only() {
        assert_eq!("CAD".parse::<Currency>().unwrap().symbol(), "CA$");
        assert_eq!("EUR".parse::<Currency>().unwrap().symbol(), "€");
        assert!(matches!(
            "GBP".parse::<Currency>(),
            Err(MoneyError::UnsupportedCurrency(_))
        ));
        assert!("usd".parse::<Currency>().is_err());
    }

    #[test]
    fn serializes_amounts_as_json_numbers() {
        let money = Money::new(dec("26.39"), Currency::Cad).unwrap();
        let json = serde_json::to_value(money).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount": 26.39, "currency": "CAD"})
        );
        let back: Money = serde_json::from_value(json).unwrap();
        assert_eq!(back, money);
        let bad =
            serde_json::from_value::<Money>(serde_json::json!({"amount": -2, "currency": "USD"}));
        assert!(bad.is_err());
    }
}
