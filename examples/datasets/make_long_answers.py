"""Build ``long_answers.jsonl``: questions whose answers run to several sentences yet grade automatically.

Early abort and hedging only matter when a rejected answer is long, so this set asks for explanations
("In two or three sentences, ...") while each item keeps one checkable key fact (a capital, a chemical
symbol, a year, an author, a number, a continent, a product). The ``regex`` grader looks for that fact
anywhere in the answer; ``exact`` would not do, since it only accepts a whole-word hit in answers of at
most 40 words. The facts are written down below (checked by hand); difficulty is mixed on purpose so a
135M-parameter model gets some right and some wrong.

Run from the repository root to regenerate the committed file (the tests check it is identical)::

    python examples/datasets/make_long_answers.py            # writes examples/datasets/long_answers.jsonl
    python examples/datasets/make_long_answers.py --check    # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("long_answers.jsonl")

# country -> (capital as written in the question's answer, regex alternatives accepted)
CAPITALS: list[tuple[str, str]] = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing|Peking"), ("India", "New Delhi"),
    ("Russia", "Moscow"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Bras[ií]lia"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"), ("Turkey", "Ankara"), ("Greece", "Athens"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Austria", "Vienna"), ("Switzerland", "Bern|Berne"), ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"), ("Ireland", "Dublin"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Ukraine", "Kyiv|Kiev"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("South Korea", "Seoul"),
    ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"), ("Iran", "Tehran|Teheran"), ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"),
    ("Peru", "Lima"), ("Chile", "Santiago"), ("Colombia", "Bogot[aá]"), ("Venezuela", "Caracas"),
    ("Cuba", "Havana"), ("Morocco", "Rabat"), ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"),
    ("New Zealand", "Wellington"), ("Mongolia", "Ulaanbaatar|Ulan Bator"), ("Nepal", "Kathmandu"),
    ("Iceland", "Reykjav[ií]k"), ("Malaysia", "Kuala Lumpur"), ("Uruguay", "Montevideo"),
    ("Tanzania", "Dodoma"), ("Afghanistan", "Kabul"), ("Jamaica", "Kingston"), ("Kazakhstan", "Astana|Nur-Sultan"),
]

# element -> chemical symbol (case-sensitive; "I" for iodine is left out: it is also the pronoun)
SYMBOLS: list[tuple[str, str]] = [
    ("hydrogen", "H"), ("helium", "He"), ("lithium", "Li"), ("carbon", "C"), ("nitrogen", "N"),
    ("oxygen", "O"), ("sodium", "Na"), ("magnesium", "Mg"), ("aluminium", "Al"), ("silicon", "Si"),
    ("phosphorus", "P"), ("sulfur", "S"), ("chlorine", "Cl"), ("potassium", "K"), ("calcium", "Ca"),
    ("iron", "Fe"), ("copper", "Cu"), ("zinc", "Zn"), ("silver", "Ag"), ("gold", "Au"), ("tin", "Sn"),
    ("lead", "Pb"), ("mercury", "Hg"), ("neon", "Ne"), ("argon", "Ar"), ("nickel", "Ni"), ("cobalt", "Co"),
    ("platinum", "Pt"), ("uranium", "U"), ("fluorine", "F"), ("boron", "B"), ("titanium", "Ti"),
    ("chromium", "Cr"), ("manganese", "Mn"), ("tungsten", "W"), ("barium", "Ba"), ("radon", "Rn"),
    ("krypton", "Kr"), ("bromine", "Br"), ("antimony", "Sb"),
]

# event (completes "In what year ...") -> year
YEARS: list[tuple[str, int]] = [
    ("did humans first land on the Moon", 1969), ("did World War II end", 1945),
    ("did World War I begin", 1914), ("did the Berlin Wall fall", 1989),
    ("did the storming of the Bastille take place", 1789),
    ("was the United States Declaration of Independence signed", 1776),
    ("did Columbus first reach the Americas", 1492), ("did the Titanic sink", 1912),
    ("did the Wright brothers make the first powered flight", 1903), ("was the Magna Carta sealed", 1215),
    ("was the Battle of Hastings fought", 1066), ("was the Soviet Union dissolved", 1991),
    ("was Sputnik 1 launched", 1957), ("did Martin Luther publish his Ninety-five Theses", 1517),
    ("did the American Civil War end", 1865), ("was Pearl Harbor attacked", 1941),
    ("did euro banknotes and coins enter circulation", 2002), ("did the Chernobyl disaster happen", 1986),
    ("was Nelson Mandela released from prison", 1990), ("did Nelson Mandela become president of South Africa", 1994),
    ("did the September 11 attacks on the United States happen", 2001), ("was the first iPhone released", 2007),
    ("was the Treaty of Versailles signed", 1919), ("did the Wall Street Crash happen", 1929),
    ("was the Battle of Waterloo fought", 1815), ("did Charles Darwin publish On the Origin of Species", 1859),
    ("was William Shakespeare born", 1564), ("did Constantinople fall to the Ottomans", 1453),
    ("did India become independent", 1947), ("was the People's Republic of China proclaimed", 1949),
    ("did Yuri Gagarin become the first human in space", 1961), ("was Germany reunified", 1990),
    ("was Queen Elizabeth II crowned", 1953), ("did the Cuban Missile Crisis take place", 1962),
    ("was President John F. Kennedy assassinated", 1963), ("was the Hubble Space Telescope launched", 1990),
    ("was Abraham Lincoln assassinated", 1865), ("was the Spanish Armada defeated", 1588),
    ("did the Mayflower arrive in America", 1620), ("did Albert Einstein publish special relativity", 1905),
]

# work -> author's surname pattern
AUTHORS: list[tuple[str, str]] = [
    ("the novel 1984", "Orwell"), ("Pride and Prejudice", "Austen"), ("Hamlet", "Shakespeare"),
    ("War and Peace", "Tolstoy"), ("Don Quixote", "Cervantes"), ("Moby-Dick", "Melville"),
    ("the Odyssey", "Homer"), ("Crime and Punishment", "Dosto[ey]e?vsky"), ("The Great Gatsby", "Fitzgerald"),
    ("The Hobbit", "Tolkien"), ("Harry Potter and the Philosopher's Stone", "Rowling"),
    ("Frankenstein", "Shelley"), ("Dracula", "Stoker"), ("the Divine Comedy", "Dante"),
    ("Les Misérables", "Hugo"), ("Oliver Twist", "Dickens"), ("The Adventures of Tom Sawyer", "Twain"),
    ("To Kill a Mockingbird", "Harper Lee"), ("The Old Man and the Sea", "Hemingway"),
    ("One Hundred Years of Solitude", "M[aá]rquez"), ("The Little Prince", "Saint-Exup[eé]ry"),
    ("Alice's Adventures in Wonderland", "Carroll"), ("Romeo and Juliet", "Shakespeare"),
    ("Jane Eyre", "Charlotte Bront[eë]"), ("Wuthering Heights", "Emily Bront[eë]"),
    ("Brave New World", "Huxley"), ("Animal Farm", "Orwell"), ("Lord of the Flies", "Golding"),
    ("The Catcher in the Rye", "Salinger"), ("Treasure Island", "Stevenson"), ("Faust", "Goethe"),
    ("the Iliad", "Homer"), ("Macbeth", "Shakespeare"), ("Anna Karenina", "Tolstoy"),
    ("Madame Bovary", "Flaubert"), ("The Metamorphosis", "Kafka"), ("A Brief History of Time", "Hawking"),
    ("the poem The Raven", "Poe"), ("the novel Ulysses", "Joyce"), ("The Time Machine", "Wells"),
]

# quantity (completes "How many ...") -> number
NUMBERS: list[tuple[str, int]] = [
    ("legs does a spider have", 8), ("legs does an insect have", 6), ("sides does a hexagon have", 6),
    ("sides does an octagon have", 8), ("sides does a pentagon have", 5), ("days are in a leap year", 366),
    ("days are in a year that is not a leap year", 365), ("continents are there on Earth", 7),
    ("planets are in our solar system", 8), ("hours are in a day", 24), ("minutes are in an hour", 60),
    ("bones are in the adult human body", 206), ("chromosomes are in a normal human body cell", 46),
    ("players does a football (soccer) team have on the field", 11),
    ("players does a basketball team have on the court", 5), ("strings does a standard guitar have", 6),
    ("keys does a standard piano have", 88), ("cards are in a standard deck without jokers", 52),
    ("degrees are in a right angle", 90), ("degrees do the angles of a triangle add up to", 180),
    ("degrees are in a full circle", 360), ("years are in a century", 100),
    ("months of the year have 31 days", 7), ("chambers does the human heart have", 4),
    ("teeth does an adult human usually have", 32), ("hearts does an octopus have", 3),
    ("arms does an octopus have", 8), ("states are in the United States", 50),
    ("squares are on a chessboard", 64), ("pieces does each player start with in chess", 16),
    ("stripes are on the flag of the United States", 13), ("centimetres are in a metre", 100),
    ("grams are in a kilogram", 1000), ("rings are on the Olympic flag", 5),
    ("colours are traditionally named in a rainbow", 7), ("signs are in the Western zodiac", 12),
    ("days are in a week", 7), ("weeks are in a year", 52), ("millimetres are in a centimetre", 10),
    ("minutes are in a day", 1440),
]

# country -> continent
CONTINENTS: list[tuple[str, str]] = [
    ("Kenya", "Africa"), ("Peru", "South America"), ("Thailand", "Asia"), ("Poland", "Europe"),
    ("Canada", "North America"), ("Chile", "South America"), ("Vietnam", "Asia"), ("Portugal", "Europe"),
    ("Nigeria", "Africa"), ("Argentina", "South America"), ("Mongolia", "Asia"), ("Sweden", "Europe"),
    ("Ghana", "Africa"), ("Bolivia", "South America"), ("Nepal", "Asia"), ("Austria", "Europe"),
    ("Morocco", "Africa"), ("Colombia", "South America"), ("Japan", "Asia"), ("Ireland", "Europe"),
    ("Ethiopia", "Africa"), ("Ecuador", "South America"), ("Laos", "Asia"), ("Belgium", "Europe"),
    ("Madagascar", "Africa"), ("Paraguay", "South America"), ("Cambodia", "Asia"), ("Hungary", "Europe"),
    ("Zambia", "Africa"), ("Uruguay", "South America"), ("Bangladesh", "Asia"), ("Finland", "Europe"),
    ("Senegal", "Africa"), ("Venezuela", "South America"), ("Pakistan", "Asia"), ("Slovakia", "Europe"),
    ("Mali", "Africa"), ("Namibia", "Africa"), ("Bhutan", "Asia"), ("the United States", "North America"),
]

# (a, b) products, a fixed list rather than a random draw so the file never depends on a seed
PRODUCTS: list[tuple[int, int]] = [
    (3, 4), (6, 7), (8, 9), (12, 3), (15, 4), (11, 11), (13, 5), (17, 3), (21, 4), (25, 6),
    (14, 7), (19, 2), (23, 3), (16, 8), (32, 5), (45, 2), (18, 6), (27, 4), (9, 12), (7, 13),
    (24, 5), (36, 3), (48, 2), (29, 3), (12, 12), (35, 4), (41, 5), (22, 9), (38, 7), (53, 6),
    (5, 5), (4, 8), (10, 10), (20, 3), (9, 9), (14, 4), (26, 3), (31, 4), (43, 3), (62, 5),
    (17, 17), (28, 6), (47, 8), (56, 7), (64, 9), (73, 4),
]

CAPITAL_PROMPTS = [
    "In two or three sentences, tell me the capital of {x} and one thing the city is known for.",
    "Answer and explain: which city is the capital of {x}? Give the name and a sentence or two about it.",
]
SYMBOL_PROMPTS = [
    "In two or three sentences, give the chemical symbol of {x} and say where the element is found or used.",
    "Answer and explain your reasoning: what is the chemical symbol for {x}?",
]
YEAR_PROMPTS = [
    "In two or three sentences, explain in what year {x}, and why it mattered.",
    "Answer and explain: in what year {x}? Give the year and a sentence of context.",
]
AUTHOR_PROMPTS = [
    "In two or three sentences, say who wrote {x} and what it is about.",
    "Answer and explain: who is the author of {x}? Name the author and describe the work briefly.",
]
NUMBER_PROMPTS = [
    "In two or three sentences, explain how many {x}.",
    "Answer and explain your reasoning: how many {x}?",
]
CONTINENT_PROMPTS = [
    "In two or three sentences, say on which continent {x} lies and name one of its neighbours.",
    "Answer and explain: which continent is {x} in? Give the continent and a sentence about the country.",
]
PRODUCT_PROMPT = "Answer and explain your reasoning step by step: what is {a} times {b}?"

_NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 10: "ten", 11: "eleven",
                 12: "twelve", 13: "thirteen", 16: "sixteen", 24: "twenty-four", 32: "thirty-two",
                 46: "forty-six", 50: "fifty", 52: "fifty-two", 60: "sixty", 64: "sixty-four",
                 88: "eighty-eight", 90: "ninety", 100: "one hundred"}


def _word(pattern: str, *, case: bool = False) -> str:
    """A whole-word regex (``(?i)`` unless ``case``); not after a hyphen, so "twenty-four" is not "four"."""
    return ("" if case else "(?i)") + rf"(?<![\w-])(?:{pattern})(?!\w)"


def _number(n: int) -> str:
    forms = [str(n)] + ([f"{n:,}"] if n >= 1000 else []) + ([_NUMBER_WORDS[n]] if n in _NUMBER_WORDS else [])
    return _word("|".join(re.escape(f) for f in forms))


def build() -> list[dict[str, str]]:
    """Every item, in a fixed order, as the dataset rows ``collect`` reads."""
    items: list[dict[str, str]] = []

    def add(prefix: str, i: int, prompt: str, reference: str) -> None:
        items.append({"id": f"{prefix}-{i + 1:02d}", "prompt": prompt, "reference": reference, "grader": "regex"})

    for i, (country, capital) in enumerate(CAPITALS):
        add("capital", i, CAPITAL_PROMPTS[i % 2].format(x=country), _word(capital))
    for i, (element, symbol) in enumerate(SYMBOLS):
        add("symbol", i, SYMBOL_PROMPTS[i % 2].format(x=element), _word(re.escape(symbol), case=True))
    for i, (event, year) in enumerate(YEARS):
        add("year", i, YEAR_PROMPTS[i % 2].format(x=event), _word(str(year)))
    for i, (work, author) in enumerate(AUTHORS):
        add("author", i, AUTHOR_PROMPTS[i % 2].format(x=work), _word(author))
    for i, (quantity, n) in enumerate(NUMBERS):
        add("count", i, NUMBER_PROMPTS[i % 2].format(x=quantity), _number(n))
    for i, (country, continent) in enumerate(CONTINENTS):
        add("continent", i, CONTINENT_PROMPTS[i % 2].format(x=country), _word(continent))
    for i, (a, b) in enumerate(PRODUCTS):
        add("product", i, PRODUCT_PROMPT.format(a=a, b=b), _number(a * b))
    return items


def render(items: list[dict[str, str]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(build())} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
