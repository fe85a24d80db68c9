"""Write the `marketplace` dataset's catalog (builders/data/marketplace/catalog.csv).

Deterministic: the same seed writes the same bytes:

    .venv/bin/python -m builders.data.marketplace.generate [--out FILE] [--seed 0]

Departments, product types, brands and model numbers are invented, and on purpose unlike the
synthetic dataset's (builders/data/taxonomy.py). Each product type has brands, product lines
(fixed attributes and a model number where real listings carry one) and variants of a line (pack
size, colour, kit), and the title templates of that type: a brand keeps one template, as a seller
would. Attribute columns hold the values exactly as the titles show them, empty where they do not
apply.
"""

import argparse
import csv
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "catalog.csv"
ATTRIBUTES = (
    "model",
    "color",
    "size",
    "material",
    "flavor",
    "scent",
    "form",
    "feature",
    "voltage",
    "viscosity",
    "count",
    "kit",
)
COLUMNS = ("item_id", "title", "category", "brand", "price", "department", *ATTRIBUTES)

# A value: text as titles show it, or (text, price factor) or (text, price factor, model suffix).
Value = str | tuple[str, float] | tuple[str, float, str]


@dataclass(frozen=True)
class Brand:
    """A seller brand: price tier, model number pattern (# digit, @ letter) and restrictions
    (column -> the values this brand uses, or one value it always has)."""

    name: str
    tier: float = 1.0
    model: str | None = None
    only: dict[str, Value | tuple[Value, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProductType:
    department: str
    category: str
    price: float
    brands: tuple[Brand, ...]
    templates: tuple[str, ...]
    line: dict[str, tuple[Value, ...]]
    variant: dict[str, tuple[Value, ...]] = field(default_factory=dict)
    lines: int = 4
    variants: int = 1


def B(name: str, tier: float = 1.0, model: str | None = None, **only: Value | tuple) -> Brand:
    return Brand(name, tier, model, only)


KITS = (
    ("Tool Only", 0.6, "B"),
    ("Kit with 1 Battery", 0.85, "K1"),
    ("Kit with 2 Batteries", 1.0, "K2"),
)
PACK = (("12", 1.0), ("24", 1.8))

TYPES: tuple[ProductType, ...] = (
    # Hardware & Tools
    ProductType(
        "Hardware & Tools",
        "Cordless Drills",
        129,
        (
            B("Hartwell", 1.25, "HWD##", color="Yellow", voltage=("12V", "20V")),
            B("Torqmaster", 1.15, "TQ-###D", color="Teal", voltage=("12V", "18V")),
            B("Brennan", 0.9, "BDD-##@", color="Red", voltage=("12V", "20V")),
            B("Kraftline", 0.7, "KL###", color="Orange", voltage=("18V", "20V")),
        ),
        (
            "{brand} {voltage} MAX Cordless Drill/Driver, 1/2-Inch, {feature}, {kit} ({model})",
            "{brand} {model} {voltage} {feature} Drill Driver {kit} - {color}",
            "{brand} {voltage} Cordless Drill Driver Set | {feature} | {kit} | Model {model}",
            "{model} {brand} {voltage} Lithium-Ion {feature} Cordless Drill, {kit}",
        ),
        {
            "voltage": (("12V", 0.7), "18V", "20V"),
            "feature": (("Brushless", 1.3), ("Compact", 0.9), "2-Speed", ("Heavy Duty", 1.1)),
        },
        {"kit": KITS},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Hardware & Tools",
        "Impact Drivers",
        119,
        (
            B("Hartwell", 1.25, "HWF##", color="Yellow", voltage=("12V", "20V")),
            B("Torqmaster", 1.15, "TQ-###ID", color="Teal", voltage=("12V", "18V")),
            B("Brennan", 0.9, "BID-##@", color="Red", voltage=("12V", "20V")),
            B("Kraftline", 0.7, "KL###I", color="Orange", voltage=("18V", "20V")),
        ),
        (
            "{brand} {voltage} MAX {feature} Impact Driver, 1/4-Inch Hex, {kit} ({model})",
            "{brand} {model} {voltage} Cordless Impact Driver - {feature} - {kit}",
            "{brand} {voltage} Impact Driver | {feature} | {kit} | {color}",
        ),
        {
            "voltage": (("12V", 0.7), "18V", "20V"),
            "feature": (("Brushless", 1.3), "3-Speed", ("Compact", 0.9), "Hydraulic"),
        },
        {"kit": KITS},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Hardware & Tools",
        "Circular Saws",
        89,
        (
            B("Hartwell", 1.3, "HWS###", color="Yellow"),
            B("Kraftline", 0.75, "KL-CS###", color="Orange"),
            B("Brennan", 0.95, "BCS##@", color="Red"),
            B("Sawbuck", 1.1, "SB-#####", color="Gray"),
        ),
        (
            "{brand} {size} Circular Saw, 15-Amp, {feature} ({model})",
            "{brand} {model} 15 Amp {size} Corded Circular Saw with {feature}",
            "{brand} Circular Saw {size} 15A - {feature} - {model}",
        ),
        {
            "size": ("7-1/4 in", ("6-1/2 in", 0.9), ("5-1/2 in", 0.8)),
            "feature": ("Laser Guide", "Electric Brake", ("Worm Drive", 1.5), "Magnesium Shoe"),
        },
        lines=10,
    ),
    ProductType(
        "Hardware & Tools",
        "Screwdriver Sets",
        29,
        (
            B("Brennan", 1.0),
            B("Toolcraft", 0.8),
            B("Hartwell", 1.3),
            B("Greystone", 0.9),
        ),
        (
            "{brand} {count}-Piece {feature} Screwdriver Set with Case",
            "{brand} Screwdriver Set, {count} Pc, {feature}, Phillips/Slotted/Torx",
            "{brand} {feature} Screwdriver Kit ({count} Piece) | Chrome Vanadium Steel",
        ),
        {
            "count": (("6", 0.5), ("10", 0.7), "20", ("42", 1.6)),
            "feature": ("Magnetic Tip", ("Insulated", 1.4), ("Precision", 0.8), "Ratcheting"),
        },
        lines=10,
    ),
    ProductType(
        "Hardware & Tools",
        "Tape Measures",
        16,
        (
            B("Hartwell", 1.3, color="Yellow"),
            B("Toolcraft", 0.8, color="Black"),
            B("Kraftline", 0.85, color="Orange"),
            B("Greystone", 1.0, color="Gray"),
        ),
        (
            "{brand} {size} x 1-1/16 in {feature} Tape Measure",
            "{brand} {size} Tape Measure, {feature}, {color}",
            "{brand} Tape Measure {size} | {feature} | Shock Absorbent Case",
        ),
        {"size": (("12 ft", 0.6), ("16 ft", 0.8), "25 ft", ("30 ft", 1.2), ("35 ft", 1.4))},
        {"feature": ("Magnetic Tip", "Auto Lock", "Fractional Markings", "Metric/SAE")},
        lines=4,
        variants=2,
    ),
    # Pet Supplies
    ProductType(
        "Pet Supplies",
        "Dog Food",
        42,
        (
            B("Wildpaw", 1.3),
            B("Heartland Pet", 0.9),
            B("Trueborn", 1.15),
            B("Canyon Ridge", 1.0),
        ),
        (
            "{brand} {feature} Dry Dog Food, {flavor} Recipe, {size} Bag",
            "{brand} {feature} Dog Food - Real {flavor} - {size}",
            "{brand} {flavor} {feature} Formula Dry Dog Food, {size}",
        ),
        {
            "flavor": ("Chicken", "Lamb", ("Salmon", 1.1), "Beef", "Turkey"),
            "feature": (("Grain-Free", 1.2), "Puppy", "Adult", "Senior", "Small Breed"),
        },
        {"size": (("5 lb", 0.3), ("15 lb", 0.7), "30 lb")},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Pet Supplies",
        "Wet Cat Food",
        24,
        (
            B("Purrfect Bistro", 1.2, size="3 oz"),
            B("Whisker Lane", 1.0, size="5.5 oz"),
            B("Felina", 1.3, size="3 oz"),
            B("Heartland Pet", 0.85, size="5.5 oz"),
        ),
        (
            "{brand} {feature} Wet Cat Food, {flavor}, {size} Cans (Pack of {count})",
            "{brand} {flavor} {feature} Canned Cat Food - {count} x {size}",
            "{brand} Wet Cat Food {flavor} {feature} | {size} Can | {count} Count",
        ),
        {
            "flavor": (
                "Chicken",
                "Salmon",
                "Tuna",
                "Turkey & Giblets",
                "Ocean Fish",
                "Variety Pack",
            ),
            "feature": ("Pate", "Shreds in Gravy", "Chunks", ("Grain-Free", 1.2)),
        },
        {"count": (("12", 0.55), "24")},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Pet Supplies",
        "Cat Litter",
        19,
        (
            B("ClumpRite", 1.0, material=("Clay", "Silica Crystal")),
            B("Fresh Paws", 1.15),
            B("PineNest", 1.1, material=("Pine", "Corn", "Walnut")),
            B("Litterly", 0.85),
        ),
        (
            "{brand} {feature} Clumping {material} Cat Litter, {size}",
            "{brand} Natural {material} Cat Litter - {feature} - {size} Bag",
            "{brand} Cat Litter, {material}, {feature}, {size}",
        ),
        {
            "material": ("Clay", ("Silica Crystal", 1.5), ("Pine", 1.2), "Corn", ("Walnut", 1.3)),
            "feature": ("Unscented", "Lightly Scented", "Multi-Cat", "Odor Control"),
        },
        {"size": (("10 lb", 0.55), ("20 lb", 0.9), ("40 lb", 1.5))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Pet Supplies",
        "Dog Toys",
        13,
        (B("ChewForce", 1.2), B("Happy Hound", 0.9), B("RuffGrip", 1.0), B("Pawsome", 0.85)),
        (
            "{brand} {feature} Dog Chew Toy for Aggressive Chewers, {material}, {size}, {color}",
            "{brand} {material} Dog Toy - {feature} - {size} - {color}",
            "{brand} Dog Toys | {feature} {material} Chew Toy | {size} Breed | {color}",
        ),
        {
            "material": ("Rubber", ("Nylon", 1.1), ("Rope", 0.8), ("Plush", 0.9)),
            "feature": ("Squeaky", ("Treat Dispensing", 1.3), ("Indestructible", 1.4), "Floating"),
            "color": ("Blue", "Red", "Orange", "Green"),
        },
        {"size": (("Small", 0.8), "Medium", ("Large", 1.3))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Pet Supplies",
        "Pet Waste Bags",
        14,
        (B("Happy Hound", 0.9), B("Earthpup", 1.3), B("PickUp Pal", 1.0), B("Wildpaw", 1.1)),
        (
            "{brand} Dog Poop Bags, {feature}, {color}, {count} Bags with Dispenser",
            "{brand} Pet Waste Bags - {count} Count - {feature} - {color}",
            "{brand} {feature} Dog Waste Bags | {count} Bags on Rolls | {color}",
        ),
        {
            "feature": ("Unscented", "Lavender Scented", ("Compostable", 1.4), "Extra Thick"),
            "color": ("Green", "Black", "Blue", "Assorted"),
        },
        {"count": (("120", 0.5), ("270", 0.8), ("540", 1.3))},
        lines=4,
        variants=3,
    ),
    # Grocery & Pantry
    ProductType(
        "Grocery & Pantry",
        "Ground Coffee",
        11,
        (
            B("Copper Kettle Coffee", 1.2),
            B("Morning Ridge", 0.9),
            B("Bean & Barrel", 1.3),
            B("Sierra Roasters", 1.0),
        ),
        (
            "{brand} {flavor} Ground Coffee, 100% Arabica, {size} Bag",
            "{brand} Ground Coffee - {flavor} - {size}",
            "{brand} {flavor}, Medium Grind Coffee, {size} Can",
        ),
        {
            "flavor": (
                "Dark Roast",
                "Medium Roast",
                "Breakfast Blend",
                "French Roast",
                "Colombian",
                "Hazelnut",
                "Decaf House Blend",
            ),
        },
        {"size": ("12 oz", ("24 oz", 1.7), ("2 lb", 2.2))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Grocery & Pantry",
        "Coffee Pods",
        22,
        (
            B("Copper Kettle Coffee", 1.2),
            B("Morning Ridge", 0.9),
            B("Brewpoint", 1.0),
            B("Sierra Roasters", 1.1),
        ),
        (
            "{brand} {flavor} Single Serve Coffee Pods, for K-Cup Brewers, {count} Count",
            "{brand} Coffee Pods - {flavor} - {count} Pods",
            "{brand} {flavor} Coffee, Single-Serve Pods for Keurig Brewers, {count} Ct",
        ),
        {
            "flavor": (
                "Dark Roast",
                "Medium Roast",
                "Breakfast Blend",
                "Colombian",
                "Caramel",
                "Donut Shop",
                "Decaf",
            ),
        },
        {"count": ("24", ("48", 1.8), ("72", 2.5), ("100", 3.2))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Grocery & Pantry",
        "Olive Oil",
        14,
        (
            B("Villa Oliva", 1.3),
            B("Terra Rossa", 1.1),
            B("Everyday Basics", 0.7),
            B("Olivara", 1.0),
        ),
        (
            "{brand} {feature} Olive Oil, Cold Pressed, {size} Bottle",
            "{brand} {feature} Olive Oil - {size}",
            "{brand} Olive Oil, {feature}, Product of Spain, {size}",
        ),
        {"feature": ("Extra Virgin", ("Organic Extra Virgin", 1.3), "Light Tasting", "Pure")},
        {"size": ("500 ml", ("1 L", 1.7), ("3 L", 4.0))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Grocery & Pantry",
        "Tea",
        6,
        (
            B("Leaf & Kettle", 1.2),
            B("Camden Tea Co.", 1.1),
            B("Harbor Tea", 1.0),
            B("Everyday Basics", 0.7),
        ),
        (
            "{brand} {flavor} Tea, {count} Tea Bags",
            "{brand} Tea Bags, {flavor}, {count} Count (Pack of 1)",
            "{brand} {flavor} Tea Bags | {count} Count | Non-GMO",
        ),
        {
            "flavor": (
                "Green",
                "Earl Grey",
                "English Breakfast",
                "Chamomile",
                "Peppermint",
                "Chai",
            ),
        },
        {"count": ("20", ("40", 1.7), ("100", 3.5))},
        lines=5,
        variants=2,
    ),
    ProductType(
        "Grocery & Pantry",
        "Sparkling Water",
        9,
        (
            B("Fizzwell", 1.1, size="12 fl oz"),
            B("Clearbrook", 1.0, size="16.9 fl oz"),
            B("Everyday Basics", 0.7, size="12 fl oz"),
            B("Aqua Vela", 1.3, size="16.9 fl oz"),
        ),
        (
            "{brand} Sparkling Water, {flavor}, {size} Cans (Pack of {count})",
            "{brand} {flavor} Sparkling Water - {count} Pack, {size}",
            "{brand} Zero Calorie Sparkling Mineral Water | {flavor} | {count} x {size}",
        ),
        {"flavor": ("Lime", "Grapefruit", "Lemon", "Black Cherry", "Unflavored", "Mango")},
        {"count": (("8", 0.5), ("12", 0.7), ("24", 1.3))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Grocery & Pantry",
        "Protein Bars",
        24,
        (B("Peak Fuel", 1.1), B("NutriCraft", 1.0), B("Everyday Basics", 0.7), B("Gritbar", 1.2)),
        (
            "{brand} Protein Bars, {flavor}, {feature}, {count} Count",
            "{brand} {feature} Protein Bar - {flavor} - Box of {count}",
            "{brand} {flavor} Protein Bar | {feature} | Gluten Free | {count} Bars",
        ),
        {
            "flavor": (
                "Chocolate Peanut Butter",
                "Cookies & Cream",
                "Chocolate Chip Cookie Dough",
                "Birthday Cake",
                "Salted Caramel",
            ),
            "feature": ("20g Protein", "Low Sugar", "Keto", ("Plant-Based", 1.1)),
        },
        {"count": PACK},
        lines=6,
        variants=2,
    ),
    # Office Supplies
    ProductType(
        "Office Supplies",
        "Printer Paper",
        12,
        (
            B("Brightmark", 1.1),
            B("Pressline", 1.0),
            B("Everyday Basics", 0.8),
            B("Cascade Office", 1.2),
        ),
        (
            "{brand} Copy Paper, {size}, {feature}, {count} Sheets",
            "{brand} Printer Paper {size} - {feature} - {count} Sheets",
            "{brand} {feature} Multipurpose Paper | {size} | {count} Sheets, White",
        ),
        {
            "size": ("8.5 x 11 in", ("8.5 x 14 in", 1.3), ("11 x 17 in", 2.0)),
            "feature": ("92 Bright", ("96 Bright", 1.1), "Recycled", ("Heavyweight 24 lb", 1.3)),
        },
        {"count": ("500", ("2500", 4.2), ("5000", 7.5))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Office Supplies",
        "Adhesive Note Pads",
        9,
        (B("Stikki", 1.2), B("NoteWell", 1.0), B("Brightmark", 0.9), B("Everyday Basics", 0.7)),
        (
            "{brand} Self-Stick Note Pads, {size}, {color}, {count} Pads/Pack",
            "{brand} Adhesive Note Pads - {size} - {color} - {count} Pack",
            "{brand} Repositionable Notes {size}, {color}, 100 Sheets/Pad, {count} Pads",
        ),
        {
            "size": ("3 x 3 in", ("3 x 5 in", 1.3), ("4 x 6 in", 1.6), ("1.5 x 2 in", 0.6)),
            "color": ("Canary Yellow", "Assorted Neon", "Pastel Colors", "Bright Colors"),
        },
        {"count": PACK},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Office Supplies",
        "Ballpoint Pens",
        8,
        (B("Inkwell", 1.2), B("Brightmark", 1.0), B("Scriptor", 1.3), B("Everyday Basics", 0.7)),
        (
            "{brand} {feature} Ballpoint Pens, {color} Ink, {count}-Count",
            "{brand} Ballpoint Pen - {color} - {feature} - Pack of {count}",
            "{brand} Smooth Writing Ballpoint Pens | {color} Ink | {feature} | {count} Pens",
        ),
        {
            "color": ("Black", "Blue", "Red", ("Assorted", 1.2)),
            "feature": (("Retractable", 1.3), "Medium Point 1.0 mm", "Fine Point 0.7 mm", "Stick"),
        },
        {"count": ("12", ("24", 1.7), ("60", 3.5))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Office Supplies",
        "Paper Shredders",
        79,
        (
            B("Securex", 1.2, "SX-##C"),
            B("Pressline", 1.0, "PS-###M"),
            B("Cascade Office", 0.9, "CO###X"),
            B("Docuguard", 1.3, "DG-####"),
        ),
        (
            "{brand} {size} {feature} Paper Shredder for Home Office, {model}",
            "{brand} {model} {feature} Shredder - {size} Capacity, 5-Gallon Bin",
            "{brand} Paper Shredder, {size}, {feature}, Credit Card & Staple Safe ({model})",
        ),
        {
            "feature": ("Cross-Cut", ("Micro-Cut", 1.4), ("Strip-Cut", 0.7)),
            "size": (("8-Sheet", 0.7), "12-Sheet", ("16-Sheet", 1.4), ("20-Sheet", 1.9)),
        },
        lines=10,
    ),
    ProductType(
        "Office Supplies",
        "Label Makers",
        39,
        (B("LabelCraft", 1.1, "LC-###"), B("Tagwell", 1.0, "TW###"), B("Markit", 1.2, "MK-##BT")),
        (
            "{brand} {model} {feature} Label Maker, {color}",
            "{brand} Label Maker Machine with Tape - {feature} - {model} - {color}",
            "{brand} {feature} Label Printer {model}, QWERTY Keyboard, {color}",
        ),
        {"feature": (("Bluetooth", 1.3), "Handheld", ("Desktop", 1.5), "Rechargeable")},
        {"color": ("White", "Gray", "Pink", "Blue")},
        lines=4,
        variants=3,
    ),
    # Garden & Patio
    ProductType(
        "Garden & Patio",
        "Garden Hoses",
        34,
        (B("Flexora", 1.0), B("Aquaflow", 1.2), B("Yardline", 0.9), B("Greenmark", 1.1)),
        (
            "{brand} {material} Garden Hose, 5/8 in x {size}, {color}",
            "{brand} {size} {material} Garden Hose - Kink Resistant - {color}",
            "{brand} Garden Hose {size} | {material} | Brass Fittings | {color}",
        ),
        {
            "material": (("Rubber", 1.4), ("Vinyl", 0.7), "Hybrid Polymer", ("Expandable", 0.9)),
            "color": ("Green", "Black", "Blue", "Gray"),
        },
        {"size": (("25 ft", 0.6), "50 ft", ("75 ft", 1.4), ("100 ft", 1.8))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Garden & Patio",
        "String Trimmers",
        139,
        (
            B("Yardline", 0.9, "YL-ST###", voltage=("20V", "40V")),
            B("Hartwell", 1.3, "HWST##", voltage=("20V", "60V")),
            B("Greenmark", 1.0, "GM###T", voltage=("40V", "80V")),
            B("Torqmaster", 1.2, "TQ-##ST", voltage=("18V", "40V")),
        ),
        (
            "{brand} {voltage} {feature} String Trimmer, 13 in, {kit} ({model})",
            "{brand} {model} {voltage} Cordless String Trimmer - {feature} - {kit}",
            "{brand} {voltage} Max Lithium-Ion String Trimmer | {feature} | {kit}",
        ),
        {
            "voltage": (("18V", 0.8), ("20V", 0.8), "40V", ("60V", 1.2), ("80V", 1.4)),
            "feature": (("Brushless", 1.2), "Straight Shaft", "Edger Conversion", "Lightweight"),
        },
        {"kit": (("Tool Only", 0.6, "B"), ("Kit with 1 Battery", 1.0, "K1"))},
        lines=5,
        variants=2,
    ),
    ProductType(
        "Garden & Patio",
        "Lawn Mowers",
        399,
        (
            B("Yardline", 0.85, "YL-M###", voltage=("40V",)),
            B("Greenmark", 1.0, "GM##M", voltage=("40V", "80V")),
            B("Torqmaster", 1.2, "TQ-LM##", voltage=("18V", "40V")),
            B("Mowell", 1.1, "MW-####"),
        ),
        (
            "{brand} {voltage} {size} {feature} Cordless Lawn Mower, {kit} ({model})",
            "{brand} {model} {voltage} Brushless {size} Lawn Mower - {feature} - {kit}",
            "{brand} Battery Lawn Mower {size} Deck | {voltage} | {feature} | {kit}",
            "{brand} {feature} Electric Lawn Mower, {voltage}, {size}, {kit}, Model {model}",
        ),
        {
            "voltage": (("18V", 0.6), "40V", ("80V", 1.4)),
            "size": (("16 in", 0.8), "20 in", ("21 in", 1.1)),
            "feature": (("Self-Propelled", 1.4), "Push", "Mulching"),
        },
        {"kit": (("Tool Only", 0.7, "B"), ("Kit with 2 Batteries", 1.0, "K2"))},
        lines=5,
        variants=2,
    ),
    ProductType(
        "Garden & Patio",
        "Bird Feeders",
        29,
        (B("Songbird Haven", 1.1), B("Perch & Co", 1.2), B("Yardline", 0.8), B("Wingwell", 1.0)),
        (
            "{brand} {feature} Bird Feeder, {material}, {color}",
            "{brand} {material} {feature} Wild Bird Feeder for Outdoors - {color}",
            "{brand} Bird Feeder | {feature} | {material} | Holds 2 lb Seed | {color}",
        ),
        {
            "material": ("Metal", ("Cedar Wood", 1.2), ("Plastic", 0.7), ("Copper", 1.5)),
            "feature": (("Squirrel-Proof", 1.4), "Hanging", ("Window", 0.8), "Tube"),
        },
        {"color": ("Green", "Black", "Brown", "Red")},
        lines=5,
        variants=2,
    ),
    ProductType(
        "Garden & Patio",
        "Potting Soil",
        11,
        (B("Greenmark", 1.1), B("Rootwell", 1.0), B("Terra Verde", 1.3), B("Everyday Basics", 0.7)),
        (
            "{brand} {feature} Potting Mix, {size}",
            "{brand} {feature} Potting Soil - {size} Bag",
            "{brand} Premium Potting Mix for Container Plants | {feature} | {size}",
        ),
        {
            "feature": (
                "All Purpose",
                ("Organic", 1.3),
                "Indoor",
                "Cactus & Succulent",
                "Seed Starting",
            ),
        },
        {"size": ("8 qt", ("16 qt", 1.7), ("1.5 cu ft", 2.6))},
        lines=4,
        variants=3,
    ),
    # Automotive
    ProductType(
        "Automotive",
        "Car Phone Mounts",
        19,
        (B("Gripster", 1.0), B("RoadMate", 0.9), B("DriveClip", 1.1), B("Mountix", 1.2)),
        (
            "{brand} {feature} Car Phone Mount, 360 Rotation, for iPhone & Android, {color}",
            "{brand} Phone Mount for Car - {feature} - Universal Cell Phone Holder - {color}",
            "{brand} {feature} Phone Holder for Car | One-Touch Lock | {color}",
        ),
        {
            "feature": (
                "Magnetic",
                "Air Vent",
                "Dashboard",
                ("Wireless Charging", 2.0),
                "Windshield",
                "Cup Holder",
            ),
        },
        {"color": ("Black", "Silver", "Gray")},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Automotive",
        "Motor Oil",
        9,
        (B("Lubrex", 1.1), B("Duraline", 1.0), B("Petromax", 1.2), B("AutoCore", 0.8)),
        (
            "{brand} {feature} Motor Oil {viscosity}, {size}",
            "{brand} {viscosity} {feature} Motor Oil - {size}",
            "{brand} Motor Oil | {viscosity} | {feature} | {size}",
        ),
        {
            "viscosity": ("5W-30", "0W-20", "10W-30", "5W-20", "10W-40"),
            "feature": (
                ("Full Synthetic", 1.4),
                "Synthetic Blend",
                "High Mileage",
                ("Conventional", 0.8),
            ),
        },
        {"size": ("1 qt", ("5 qt", 3.8))},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Automotive",
        "Windshield Wiper Blades",
        17,
        (B("Rainshield", 1.1), B("Vistaline", 1.0), B("Duraline", 0.9), B("AutoCore", 0.8)),
        (
            "{brand} {feature} Windshield Wiper Blade, {size}",
            "{brand} {size} {feature} Wiper Blade - All Season",
            "{brand} Wiper Blades {size} | {feature} | Easy Install (Pack of 1)",
        ),
        {"feature": (("Beam", 1.2), ("Hybrid", 1.3), ("Conventional", 0.7), ("Winter", 1.1))},
        {"size": ("16 in", "18 in", "20 in", "22 in", "24 in", "26 in")},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Automotive",
        "Jump Starters",
        89,
        (
            B("Boostline", 1.1, "BL-###"),
            B("Ampro", 1.0, "AP####"),
            B("RoadMate", 0.85, "RM-J#"),
            B("Chargex", 1.2, "CX###0"),
        ),
        (
            "{brand} {size} Peak Car Jump Starter with {feature} ({model})",
            "{brand} {model} Portable Jump Starter - {size} - {feature}",
            "{brand} Jump Starter Battery Pack {size} | {feature} | 12V",
        ),
        {
            "size": (("1000A", 0.7), "1500A", ("2000A", 1.3), ("3000A", 1.7)),
            "feature": ("Power Bank", ("Air Compressor", 1.5), "LED Flashlight"),
        },
        lines=8,
    ),
    ProductType(
        "Automotive",
        "Tire Inflators",
        45,
        (
            B("Ampro", 1.0, "AP-TI##"),
            B("Boostline", 1.1, "BL###T"),
            B("AutoCore", 0.8, "AC-##"),
            B("Airwell", 1.2, "AW####"),
        ),
        (
            "{brand} {voltage} {feature} Tire Inflator, Portable Air Compressor ({model})",
            "{brand} {model} Tire Inflator - {voltage} - {feature}",
            "{brand} Portable Tire Inflator {voltage} | {feature} | 150 PSI",
        ),
        {
            "feature": (("Cordless", 1.4), "Digital Gauge", "Auto Shut-Off", "Heavy Duty"),
            "voltage": ("12V", ("20V", 1.3)),
        },
        lines=6,
    ),
    # Baby
    ProductType(
        "Baby",
        "Diapers",
        36,
        (
            B("Cuddlebug", 1.2),
            B("Little Sprout", 1.0),
            B("Everyday Basics", 0.7),
            B("Tendercare", 1.1),
        ),
        (
            "{brand} {feature} Diapers, {size}, {count} Count",
            "{brand} Baby Diapers {size} ({count} Ct) - {feature}",
            "{brand} {feature} Disposable Diapers | {size} | {count} Diapers",
        ),
        {
            "feature": (("Sensitive", 1.1), ("Overnight", 1.2), "Hypoallergenic"),
            "count": (("84", 0.6), "128", ("168", 1.3)),
        },
        {
            "size": (
                "Newborn",
                "Size 1",
                "Size 2",
                "Size 3",
                "Size 4",
                "Size 5",
                "Size 6",
            )
        },
        lines=3,
        variants=4,
    ),
    ProductType(
        "Baby",
        "Baby Wipes",
        9,
        (
            B("Cuddlebug", 1.2),
            B("Little Sprout", 1.0),
            B("Everyday Basics", 0.7),
            B("Pure Bubs", 1.3),
        ),
        (
            "{brand} {feature} Baby Wipes, {count} Count",
            "{brand} Baby Wipes - {feature} - {count} Wipes (Flip-Top Packs)",
            "{brand} Hypoallergenic Baby Wipes | {feature} | {count} Total Wipes",
        ),
        {"feature": ("Unscented", "Sensitive", ("99% Water", 1.2), "Aloe")},
        {"count": (("72", 0.4), "216", ("720", 2.8))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Baby",
        "Baby Bottles",
        19,
        (
            B("Little Sprout", 1.0, count="3"),
            B("Nuvia", 1.2, count="2"),
            B("Cozy Nest", 1.1, count="4"),
            B("Milkway", 0.9, count="3"),
        ),
        (
            "{brand} {feature} Baby Bottles, {material}, {size}, {count} Pack",
            "{brand} {material} Baby Bottle {size} - {feature} Nipple - Pack of {count}",
            "{brand} Baby Bottles | {feature} | {material} | {size} | {count} Count",
        ),
        {
            "material": (("Glass", 1.3), ("Plastic", 0.8), "Silicone"),
            "feature": ("Anti-Colic", "Wide Neck", "Slow Flow"),
        },
        {"size": (("5 oz", 0.9), "9 oz")},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Baby",
        "Pacifiers",
        8,
        (B("Cuddlebug", 1.1), B("Little Sprout", 1.0), B("Cozy Nest", 1.2), B("Nuvia", 1.3)),
        (
            "{brand} {material} Pacifiers, {size}, {color}, {count} Pack",
            "{brand} Baby Pacifier {size} - {material} - {color} ({count} Count)",
            "{brand} Orthodontic Soothers | {size} | {material} | {color} | {count} Pack",
        ),
        {
            "size": ("0-3 Months", "0-6 Months", "6-18 Months"),
            "material": ("Silicone", ("Natural Rubber", 1.3)),
            "color": ("Blue", "Pink", "Green", "Clear", "Assorted"),
        },
        {"count": ("2", ("4", 1.7))},
        lines=6,
        variants=2,
    ),
    ProductType(
        "Baby",
        "Baby Monitors",
        89,
        (
            B("Nestwatch", 1.2, "NW-###"),
            B("Lullcam", 1.0, "LC##"),
            B("Cozy Nest", 0.9, "CN-BM#"),
            B("Brightview", 1.3, "BV####"),
        ),
        (
            "{brand} {feature} Baby Monitor, Two-Way Talk, Long Range ({model})",
            "{brand} {model} Baby Monitor - {feature} - Room Temperature Sensor",
            "{brand} Baby Monitor {feature} | Night Light | Lullabies | {model}",
        ),
        {
            "feature": (
                ("Video", 1.2),
                ("Audio", 0.5),
                ("Wi-Fi Camera", 1.4),
                ("Split Screen Video", 1.6),
                "Night Vision",
                ("Breathing Sensor", 2.0),
            ),
        },
        lines=5,
    ),
    # Health & Household
    ProductType(
        "Health & Household",
        "Vitamins",
        14,
        (
            B("VitaCore", 1.0),
            B("Pure Harvest", 1.2),
            B("Everyday Basics", 0.7),
            B("Wellspring", 1.1),
        ),
        (
            "{brand} {feature} {form}, {count} Count",
            "{brand} {feature} - {count} {form} - Immune Support",
            "{brand} Daily {feature} | {count} {form} | Non-GMO, Gluten Free",
        ),
        {
            "feature": (
                "Multivitamin",
                "Vitamin D3 2000 IU",
                "Vitamin C 1000 mg",
                "Vitamin B12",
                "Women's Multivitamin",
                "Men's Multivitamin",
                ("Prenatal Multivitamin", 1.4),
            ),
            "form": ("Tablets", ("Gummies", 1.2), "Softgels", "Capsules"),
        },
        {"count": ("60", ("120", 1.7), ("300", 3.0))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Health & Household",
        "Laundry Detergent",
        15,
        (B("Freshline", 1.2), B("Brightwash", 1.0), B("Everyday Basics", 0.7), B("Purewash", 1.1)),
        (
            "{brand} {form} Laundry Detergent, {scent}, {count} Loads",
            "{brand} Laundry Detergent {form} - {scent} Scent - HE Compatible - {count} Loads",
            "{brand} {scent} {form} Laundry Detergent | {count} Loads | HE",
        ),
        {
            "form": ("Liquid", ("Pods", 1.3), ("Powder", 0.9)),
            "scent": ("Fresh Linen", "Lavender", "Free & Clear", "Spring Meadow", "Ocean Breeze"),
        },
        {"count": ("32", ("64", 1.8), ("96", 2.5))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Health & Household",
        "Toilet Paper",
        12,
        (B("Softcloud", 1.2), B("Everyday Basics", 0.7), B("Northwood", 1.0), B("Plushy", 1.1)),
        (
            "{brand} {feature} Toilet Paper, {count} {size}",
            "{brand} Bath Tissue - {count} {size} - {feature}",
            "{brand} {feature} Bathroom Tissue | {count} {size} | Septic Safe",
        ),
        {
            "feature": ("2-Ply", ("3-Ply", 1.2), ("Ultra Soft", 1.2), "Ultra Strong"),
            "size": (("Double Rolls", 0.8), "Mega Rolls", ("Family Mega Rolls", 1.3)),
        },
        {"count": (("6", 0.5), "12", ("24", 1.8), ("30", 2.2))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Health & Household",
        "Trash Bags",
        14,
        (
            B("Everyday Basics", 0.7),
            B("Toughguard", 1.2),
            B("Northwood", 1.0),
            B("Freshline", 1.1),
        ),
        (
            "{brand} {size} {feature} Trash Bags, {color}, {count} Count",
            "{brand} Trash Bags {size} - {feature} - {color} - {count} Bags",
            "{brand} {feature} Garbage Bags | {size} | {count} Count | {color}",
        ),
        {
            "size": (
                ("4 Gallon", 0.5),
                ("8 Gallon", 0.7),
                "13 Gallon",
                ("30 Gallon", 1.3),
                ("39 Gallon", 1.5),
            ),
            "feature": ("Drawstring", ("Flap Tie", 0.8), "Scented", ("Contractor Heavy Duty", 1.8)),
            "color": ("White", "Black", "Clear"),
        },
        {"count": (("40", 0.6), "90", ("120", 1.3))},
        lines=4,
        variants=3,
    ),
    ProductType(
        "Health & Household",
        "Electric Toothbrushes",
        49,
        (
            B("Sonident", 1.2, "SD-###"),
            B("Brightsmile", 0.8, "BS####"),
            B("Dentra", 1.0, "DX#"),
            B("Oralis", 1.3, "OR-##0"),
        ),
        (
            "{brand} {model} {feature} Electric Toothbrush, {color}",
            "{brand} {feature} Electric Toothbrush for Adults - 2 Brush Heads - {model} - {color}",
            "{brand} Rechargeable Electric Toothbrush | {feature} | 5 Modes | {color} ({model})",
        ),
        {
            "feature": (
                "Sonic",
                "Oscillating",
                ("Pressure Sensor", 1.3),
                ("Travel Case", 1.1),
                ("Smart Timer", 0.9),
            ),
        },
        {"color": ("White", "Black", "Pink", "Blue")},
        lines=4,
        variants=3,
    ),
)


def _parts(value: Value) -> tuple[str, float, str]:
    if isinstance(value, str):
        return value, 1.0, ""
    if len(value) == 2:
        return value[0], value[1], ""
    return value[0], value[1], value[2]


def _choices(brand: Brand, columns: dict[str, tuple[Value, ...]]) -> list:
    """Every combination of the given columns' values that the brand allows."""
    options = []
    for column, values in columns.items():
        allowed = brand.only.get(column)
        if allowed is not None:
            allowed = {allowed} if isinstance(allowed, str) else set(allowed)
            values = tuple(v for v in values if _parts(v)[0] in allowed)
        options.append([(column, value) for value in values])
    return [dict(combo) for combo in itertools.product(*options)]


def _model(rng: random.Random, pattern: str, taken: set[str]) -> str:
    while True:
        text = "".join(
            str(rng.randint(1, 9))
            if char == "#"
            else rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
            if char == "@"
            else char
            for char in pattern
        )
        if text not in taken:
            taken.add(text)
            return text


def _price(rng: random.Random, median: float) -> str:
    price = median * rng.lognormvariate(0.0, 0.1)
    cents = rng.choice((0.99, 0.99, 0.99, 0.49, 0.97, 0.95))
    return f"{max(math.floor(price), 0) + cents:.2f}"


def generate(seed: int = 0) -> list[dict[str, str]]:
    """The catalog rows (all values as text), item ids 1..n in a shuffled order of products."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    taken: set[str] = set()
    for product in TYPES:
        for index, brand in enumerate(product.brands):
            template = product.templates[index % len(product.templates)]
            fixed = {
                column: value
                for column, value in brand.only.items()
                if isinstance(value, str) and column not in product.line
            }
            combos = _choices(brand, product.line)
            for line in rng.sample(combos, min(product.lines, len(combos))):
                base = _model(rng, brand.model, taken) if brand.model else ""
                variants = _choices(brand, product.variant) or [{}]
                picked = sorted(
                    rng.sample(range(len(variants)), min(product.variants, len(variants)))
                )
                for variant in (variants[i] for i in picked):
                    values = {column: (value, 1.0, "") for column, value in fixed.items()}
                    values |= {
                        column: _parts(value) for column, value in {**line, **variant}.items()
                    }
                    factor = brand.tier * math.prod(part[1] for part in values.values())
                    model = base + "".join(part[2] for part in values.values())
                    text = {column: part[0] for column, part in values.items()}
                    if model:
                        text["model"] = model
                    rows.append(
                        {
                            "title": template.format(brand=brand.name, **text),
                            "category": product.category,
                            "brand": brand.name,
                            "price": _price(rng, product.price * factor),
                            "department": product.department,
                            **{column: text.get(column, "") for column in ATTRIBUTES},
                        }
                    )
    rng.shuffle(rows)
    return [{"item_id": str(i), **row} for i, row in enumerate(rows, start=1)]


def write(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m builders.data.marketplace.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=OUT, help="CSV to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = generate(args.seed)
    write(args.out, rows)
    print(f"wrote {len(rows)} items in {len(TYPES)} product types to {args.out}")


if __name__ == "__main__":
    main()
