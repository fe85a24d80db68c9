"""The category tree behind the synthetic catalog: departments, leaf categories, brands, attributes.

Every leaf lists the nouns shoppers use for it (the first is the one titles use, the others are
the synonyms queries use), a typical price and its spread, and the attribute values its items can
take. Values are written as titles show them: all lower case ones are title-cased there. Brand
names are invented.
"""

from dataclasses import dataclass

#: Attribute columns of the synthetic catalog, in the order titles and queries use them.
ATTRIBUTE_KINDS = ("feature", "material", "color", "size")

_PALETTE = (
    "black",
    "white",
    "gray",
    "navy",
    "blue",
    "red",
    "green",
    "brown",
    "beige",
    "pink",
    "yellow",
    "orange",
    "purple",
)
_DEVICE_COLORS = ("black", "silver", "gray", "white", "blue", "gold")
_SHOE_SIZES = tuple(f"Size {eu}" for eu in range(37, 47))
_CLOTHING_SIZES = ("XS", "S", "M", "L", "XL", "XXL")


@dataclass(frozen=True)
class Leaf:
    """A leaf category. Prices are lognormal around `price` (a median) with sigma `price_spread`."""

    department: str
    name: str
    nouns: tuple[str, ...]
    price: float
    price_spread: float
    features: tuple[str, ...] = ()
    materials: tuple[str, ...] = ()
    colors: tuple[str, ...] = _PALETTE
    sizes: tuple[str, ...] = ()
    weight: float = 1.0  # relative share of the catalog

    @property
    def path(self) -> str:
        return f"{self.department} > {self.name}"

    def values(self, kind: str) -> tuple[str, ...]:
        """The values this leaf's items can take for one of ATTRIBUTE_KINDS."""
        return {
            "feature": self.features,
            "material": self.materials,
            "color": self.colors,
            "size": self.sizes,
        }[kind]


BRANDS: dict[str, tuple[str, ...]] = {
    "Shoes": ("Stridewell", "Kestrel", "Trailborn", "Veloce", "Marlow", "Northpeak", "Pacer"),
    "Clothing": ("Northline", "Urban Thread", "Alder", "Meridian", "Bluefield", "Halcyon"),
    "Electronics": ("Sonique", "Voltra", "Pixelon", "Aurion", "Quantix", "Nimbus", "Zentro"),
    "Home & Kitchen": ("Hearthstone", "Casa Bella", "Ironleaf", "Kitchara", "Brewster"),
    "Sports & Outdoors": ("Summitry", "Basecamp", "Ridgeway", "Tidewater", "Flowstate", "Wildroot"),
    "Beauty": ("Lumine", "Velvetta", "Purelle", "Botanika", "Dermalux", "Sable Rose"),
    "Toys": ("Brickle", "Playwise", "Tinker Town", "Jollity", "Wonderkin", "Zoomies"),
    "Furniture": ("Oakhaven", "Nordform", "Loftwell", "Crestline", "Arbor", "Modulo"),
}

LEAVES: tuple[Leaf, ...] = (
    # Shoes
    Leaf(
        "Shoes",
        "Running Shoes",
        ("running shoes", "sneakers", "trainers", "runners"),
        85,
        0.35,
        features=("lightweight", "cushioned", "trail", "waterproof", "breathable"),
        materials=("mesh", "knit", "synthetic"),
        sizes=_SHOE_SIZES,
        weight=1.8,
    ),
    Leaf(
        "Shoes",
        "Hiking Boots",
        ("hiking boots", "trekking boots", "walking boots"),
        130,
        0.35,
        features=("waterproof", "insulated", "lightweight", "ankle"),
        materials=("leather", "suede", "nubuck"),
        sizes=_SHOE_SIZES,
    ),
    Leaf(
        "Shoes",
        "Sandals",
        ("sandals", "slides", "flip flops"),
        35,
        0.4,
        features=("adjustable", "cushioned", "waterproof"),
        materials=("leather", "rubber", "cork"),
        sizes=_SHOE_SIZES,
    ),
    Leaf(
        "Shoes",
        "Dress Shoes",
        ("dress shoes", "oxfords", "formal shoes", "brogues"),
        110,
        0.4,
        features=("slip-on", "lace-up", "cap-toe"),
        materials=("leather", "patent leather", "suede"),
        colors=("black", "brown", "navy", "burgundy"),
        sizes=_SHOE_SIZES,
    ),
    # Clothing
    Leaf(
        "Clothing",
        "T-Shirts",
        ("t-shirt", "tee", "tshirt", "top"),
        20,
        0.4,
        features=("crew neck", "v-neck", "slim fit", "oversized"),
        materials=("cotton", "organic cotton", "linen", "polyester"),
        sizes=_CLOTHING_SIZES,
        weight=2.0,
    ),
    Leaf(
        "Clothing",
        "Jeans",
        ("jeans", "denim pants", "denims"),
        60,
        0.4,
        features=("slim fit", "straight leg", "skinny", "relaxed fit"),
        materials=("denim", "stretch denim", "organic cotton"),
        colors=("blue", "black", "gray", "white"),
        sizes=tuple(f"Waist {w}" for w in range(28, 40, 2)),
        weight=1.5,
    ),
    Leaf(
        "Clothing",
        "Jackets",
        ("jacket", "windbreaker", "outerwear", "coat"),
        120,
        0.5,
        features=("waterproof", "insulated", "hooded", "packable"),
        materials=("nylon", "wool", "leather", "polyester", "down"),
        sizes=_CLOTHING_SIZES,
    ),
    Leaf(
        "Clothing",
        "Hoodies",
        ("hoodie", "sweatshirt", "hooded sweatshirt", "pullover"),
        45,
        0.35,
        features=("zip-up", "oversized", "lightweight"),
        materials=("cotton", "fleece", "polyester"),
        sizes=_CLOTHING_SIZES,
    ),
    Leaf(
        "Clothing",
        "Dresses",
        ("dress", "sundress", "gown"),
        70,
        0.5,
        features=("maxi", "midi", "wrap", "sleeveless"),
        materials=("cotton", "silk", "linen", "polyester"),
        sizes=_CLOTHING_SIZES,
        weight=1.3,
    ),
    # Electronics
    Leaf(
        "Electronics",
        "Headphones",
        ("headphones", "headset", "over-ear headphones", "cans"),
        120,
        0.6,
        features=("wireless", "noise cancelling", "bluetooth", "foldable", "studio"),
        colors=_DEVICE_COLORS,
        weight=1.3,
    ),
    Leaf(
        "Electronics",
        "Earbuds",
        ("earbuds", "earphones", "in-ear headphones", "wireless earbuds"),
        70,
        0.6,
        features=("wireless", "noise cancelling", "sport", "waterproof"),
        colors=_DEVICE_COLORS,
    ),
    Leaf(
        "Electronics",
        "Laptops",
        ("laptop", "notebook", "notebook computer", "ultrabook"),
        900,
        0.45,
        features=("gaming", "2-in-1", "lightweight", "touchscreen"),
        materials=("aluminum", "plastic", "carbon fiber"),
        colors=_DEVICE_COLORS,
        sizes=("13 inch", "14 inch", "15 inch", "16 inch"),
    ),
    Leaf(
        "Electronics",
        "Smartphones",
        ("smartphone", "cell phone", "mobile phone", "phone"),
        600,
        0.55,
        features=("5G", "dual sim", "unlocked", "rugged"),
        colors=_DEVICE_COLORS,
        sizes=("128 GB", "256 GB", "512 GB"),
        weight=1.2,
    ),
    Leaf(
        "Electronics",
        "Smartwatches",
        ("smartwatch", "fitness tracker", "fitness watch", "smart watch"),
        200,
        0.5,
        features=("GPS", "heart rate", "waterproof"),
        materials=("silicone", "stainless steel", "leather"),
        colors=_DEVICE_COLORS,
        sizes=("41 mm", "45 mm"),
    ),
    Leaf(
        "Electronics",
        "Chargers",
        ("charger", "power adapter", "charging brick", "usb charger"),
        25,
        0.5,
        features=("fast charging", "USB-C", "wireless", "dual port"),
        colors=("black", "white"),
        sizes=("20 W", "45 W", "65 W", "100 W"),
    ),
    # Home & Kitchen
    Leaf(
        "Home & Kitchen",
        "Coffee Makers",
        ("coffee maker", "coffee machine", "espresso machine", "coffee brewer"),
        90,
        0.7,
        features=("programmable", "single serve", "drip", "pod"),
        materials=("stainless steel", "plastic", "glass"),
        colors=("black", "silver", "white", "red"),
        sizes=("4 Cup", "8 Cup", "12 Cup"),
    ),
    Leaf(
        "Home & Kitchen",
        "Frying Pans",
        ("frying pan", "skillet", "fry pan", "saute pan"),
        40,
        0.5,
        features=("nonstick", "induction ready", "oven safe"),
        materials=("cast iron", "stainless steel", "aluminum", "carbon steel", "copper"),
        colors=("black", "gray", "silver", "red"),
        sizes=("8 inch", "10 inch", "12 inch"),
    ),
    Leaf(
        "Home & Kitchen",
        "Kitchen Knives",
        ("chef knife", "kitchen knife", "cooks knife", "santoku knife"),
        50,
        0.6,
        features=("forged", "full tang", "japanese"),
        materials=("stainless steel", "damascus steel", "ceramic", "carbon steel"),
        colors=(),
        sizes=("6 inch", "8 inch", "10 inch"),
    ),
    Leaf(
        "Home & Kitchen",
        "Bedding",
        ("duvet cover", "comforter cover", "quilt cover", "bedding set"),
        60,
        0.4,
        features=("hypoallergenic", "cooling", "breathable"),
        materials=("cotton", "linen", "bamboo", "microfiber", "silk"),
        sizes=("Twin", "Full", "Queen", "King"),
        weight=1.2,
    ),
    Leaf(
        "Home & Kitchen",
        "Lamps",
        ("table lamp", "desk lamp", "reading lamp", "bedside lamp"),
        45,
        0.5,
        features=("dimmable", "LED", "adjustable", "usb charging"),
        materials=("ceramic", "brass", "wood", "metal", "glass"),
    ),
    # Sports & Outdoors
    Leaf(
        "Sports & Outdoors",
        "Yoga Mats",
        ("yoga mat", "exercise mat", "fitness mat", "pilates mat"),
        35,
        0.45,
        features=("non-slip", "eco-friendly", "extra thick"),
        materials=("TPE", "natural rubber", "PVC", "cork"),
        sizes=("4 mm", "6 mm", "8 mm"),
    ),
    Leaf(
        "Sports & Outdoors",
        "Tents",
        ("tent", "camping tent", "backpacking tent", "dome tent"),
        180,
        0.6,
        features=("waterproof", "ultralight", "instant setup"),
        materials=("nylon", "polyester", "canvas"),
        colors=("green", "orange", "gray", "blue", "yellow"),
        sizes=("1-Person", "2-Person", "4-Person", "6-Person"),
    ),
    Leaf(
        "Sports & Outdoors",
        "Backpacks",
        ("backpack", "rucksack", "daypack", "hiking pack"),
        70,
        0.5,
        features=("waterproof", "laptop sleeve", "hydration compatible"),
        materials=("nylon", "polyester", "canvas", "leather"),
        sizes=("20 L", "30 L", "45 L", "65 L"),
        weight=1.3,
    ),
    Leaf(
        "Sports & Outdoors",
        "Bicycles",
        ("bicycle", "bike", "cycle", "road bike"),
        650,
        0.55,
        features=("electric", "folding", "hybrid", "mountain"),
        materials=("aluminum", "carbon fiber", "steel", "titanium"),
        sizes=("Small Frame", "Medium Frame", "Large Frame"),
    ),
    Leaf(
        "Sports & Outdoors",
        "Water Bottles",
        ("water bottle", "drink bottle", "hydration bottle", "flask"),
        20,
        0.45,
        features=("insulated", "leakproof", "BPA-free"),
        materials=("stainless steel", "plastic", "glass", "aluminum"),
        sizes=("500 ml", "750 ml", "1 L"),
    ),
    # Beauty
    Leaf(
        "Beauty",
        "Shampoo",
        ("shampoo", "hair wash", "hair cleanser"),
        12,
        0.5,
        features=("sulfate-free", "volumizing", "anti-dandruff", "moisturizing"),
        materials=("argan oil", "tea tree", "coconut", "keratin"),
        colors=(),
        sizes=("250 ml", "500 ml", "1 L"),
    ),
    Leaf(
        "Beauty",
        "Moisturizers",
        ("moisturizer", "face cream", "moisturiser", "day cream"),
        28,
        0.6,
        features=("SPF 30", "fragrance-free", "oil-free", "anti-aging"),
        materials=("hyaluronic acid", "shea butter", "aloe vera", "vitamin C"),
        colors=(),
        sizes=("30 ml", "50 ml", "100 ml"),
    ),
    Leaf(
        "Beauty",
        "Perfume",
        ("perfume", "fragrance", "eau de parfum", "cologne"),
        75,
        0.6,
        features=("floral", "woody", "citrus", "oriental", "fresh"),
        colors=(),
        sizes=("30 ml", "50 ml", "100 ml"),
    ),
    Leaf(
        "Beauty",
        "Lipstick",
        ("lipstick", "lip color", "lip stick", "lip tint"),
        18,
        0.5,
        features=("matte", "glossy", "long-lasting", "satin"),
        colors=("red", "pink", "nude", "berry", "coral", "plum"),
    ),
    # Toys
    Leaf(
        "Toys",
        "Building Blocks",
        ("building blocks", "building bricks", "construction set", "brick set"),
        40,
        0.7,
        features=("educational", "themed", "starter"),
        materials=("plastic", "wood"),
        sizes=("100 Pieces", "500 Pieces", "1000 Pieces"),
    ),
    Leaf(
        "Toys",
        "Puzzles",
        ("jigsaw puzzle", "puzzle", "jigsaw"),
        18,
        0.4,
        features=("landscape", "animal", "panorama"),
        materials=("cardboard", "wood"),
        colors=(),
        sizes=("500 Pieces", "1000 Pieces", "2000 Pieces"),
    ),
    Leaf(
        "Toys",
        "Dolls",
        ("doll", "fashion doll", "baby doll"),
        25,
        0.5,
        features=("talking", "poseable", "with accessories"),
        materials=("vinyl", "plush", "porcelain"),
    ),
    Leaf(
        "Toys",
        "RC Cars",
        ("rc car", "remote control car", "radio controlled car", "rc truck"),
        60,
        0.6,
        features=("off-road", "high speed", "rechargeable", "waterproof"),
        materials=("plastic", "metal"),
        sizes=("1:10 Scale", "1:16 Scale", "1:24 Scale"),
    ),
    # Furniture
    Leaf(
        "Furniture",
        "Office Chairs",
        ("office chair", "desk chair", "computer chair", "task chair"),
        180,
        0.5,
        features=("ergonomic", "adjustable", "lumbar support", "reclining"),
        materials=("mesh", "leather", "fabric", "faux leather"),
        colors=("black", "gray", "white", "blue", "red"),
    ),
    Leaf(
        "Furniture",
        "Sofas",
        ("sofa", "couch", "settee", "loveseat"),
        800,
        0.5,
        features=("sleeper", "reclining", "modular"),
        materials=("velvet", "leather", "linen", "fabric"),
        sizes=("2-Seater", "3-Seater", "Sectional"),
    ),
    Leaf(
        "Furniture",
        "Desks",
        ("desk", "writing desk", "computer desk", "standing desk"),
        250,
        0.55,
        features=("height adjustable", "with drawers", "l-shaped"),
        materials=("oak", "walnut", "pine", "metal", "glass"),
        colors=("black", "white", "brown", "gray"),
        sizes=("100 cm", "120 cm", "140 cm"),
    ),
    Leaf(
        "Furniture",
        "Bookshelves",
        ("bookshelf", "bookcase", "shelving unit", "book shelf"),
        120,
        0.5,
        features=("wall-mounted", "ladder", "corner"),
        materials=("oak", "pine", "walnut", "metal", "bamboo"),
        colors=("black", "white", "brown", "gray"),
        sizes=("3 Shelves", "5 Shelves"),
    ),
)
