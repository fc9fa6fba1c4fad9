//! The 20 seeded products, in 4 categories, priced in US dollars.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::money::Money;

/// The namespace of product ids (ids are name-based, so they are the same everywhere).
const PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x8f3e_1c2a_47b6_4d0e_b5a9_02c4_6e7f_1d35);

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The product id.
    pub product_id: Uuid,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Description.
    pub description: String,
    /// Image URL.
    pub image_url: String,
    /// Unit price in US dollars.
    pub price: Money,
}

const SEED: [(&str, &str, &str, i64); 20] = [
    (
        "Mechanical Keyboard",
        "Electronics",
        "Tenkeyless keyboard with tactile switches",
        8999,
    ),
    (
        "Wireless Mouse",
        "Electronics",
        "Ergonomic mouse with a silent click",
        2999,
    ),
    (
        "USB-C Hub",
        "Electronics",
        "Seven ports, 100 W pass-through charging",
        4550,
    ),
    (
        "Noise-Cancelling Headphones",
        "Electronics",
        "Over-ear, 30 hours of battery",
        19900,
    ),
    (
        "27-inch Monitor",
        "Electronics",
        "QHD IPS panel at 144 Hz",
        32999,
    ),
    (
        "Designing Data-Intensive Applications",
        "Books",
        "Reliable, scalable, maintainable systems",
        4299,
    ),
    (
        "The Rust Programming Language",
        "Books",
        "The book, second edition",
        3995,
    ),
    (
        "Domain-Driven Design",
        "Books",
        "Tackling complexity in the heart of software",
        5499,
    ),
    (
        "Enterprise Integration Patterns",
        "Books",
        "Messaging solutions that scale",
        5899,
    ),
    (
        "Refactoring",
        "Books",
        "Improving the design of existing code",
        4713,
    ),
    (
        "Chef's Knife",
        "Home",
        "20 cm, forged stainless steel",
        7900,
    ),
    ("Cast-Iron Skillet", "Home", "Pre-seasoned, 26 cm", 3450),
    ("French Press", "Home", "1 litre, double-walled", 2713),
    (
        "Desk Lamp",
        "Home",
        "Dimmable LED with a warm setting",
        3999,
    ),
    ("Linen Sheets", "Home", "Queen size, stone washed", 12900),
    (
        "Running Shoes",
        "Sports",
        "Neutral cushioning for road running",
        11999,
    ),
    ("Yoga Mat", "Sports", "6 mm, non-slip", 2499),
    (
        "Adjustable Dumbbells",
        "Sports",
        "Pair, 2 to 24 kg each",
        29900,
    ),
    ("Water Bottle", "Sports", "Insulated steel, 750 ml", 1913),
    ("Cycling Helmet", "Sports", "MIPS, with a rear light", 8950),
];

/// The id of the product named `name`.
pub fn product_id(name: &str) -> Uuid {
    Uuid::new_v5(&PRODUCT_NAMESPACE, name.as_bytes())
}

/// The seeded products, in catalog order.
pub fn seed() -> Vec<Product> {
    SEED.iter()
        .map(|&(name, category, description, cents)| Product {
            product_id: product_id(name),
            name: name.to_owned(),
            category: category.to_owned(),
            description: description.to_owned(),
            image_url: format!(
                "/images/products/{}.png",
                name.to_lowercase()
                    .replace(|c: char| !c.is_alphanumeric(), "-")
            ),
            price: Money::usd(Decimal::new(cents, 2))
                .unwrap_or_else(|_| Money::zero(crate::money::Currency::Usd)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn twenty_products_in_four_categories_with_distinct_ids() {
        let products = seed();
        assert_eq!(products.len(), 20);
        let categories: HashSet<_> = products.iter().map(|p| p.category.as_str()).collect();
        assert_eq!(categories.len(), 4);
        let ids: HashSet<_> = products.iter().map(|p| p.product_id).collect();
        assert_eq!(ids.len(), 20);
        assert!(products.iter().all(|p| !p.price.amount().is_zero()));
    }
}
