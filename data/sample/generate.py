"""Generate the committed synthetic sample in the Mobile Actions row schema.

This is NOT Google's `google/mobile-actions` data set: it is a seeded,
template-based imitation of its schema (docs/FORMAT.md, "The dataset row") so
that the pipeline runs end to end with no Hugging Face hub. Standard library
only; the same seed gives the same file, byte for byte.

Run (from the repository root):

    python data/sample/generate.py            # rewrites data/sample/mobile_actions_sample.jsonl
    python data/sample/generate.py --seed 7 --train 100 --eval 20 --out /tmp/rows.jsonl

Writes one JSON object per line, {"metadata", "tools", "messages"}, with the
train rows first and then the eval rows (the split is each row's "metadata").

What varies from row to row: the "current date and time" (2024-2027, with its
day of week), the order of the seven tools and of each tool's properties, the
request's wording (polite, terse, chatty, an occasional typo), names, phone
numbers (kept as written), e-mail addresses, places, event titles, subjects and
bodies, and optional arguments (present only when the user gives them). One
row in eight asks for two calls, targeted in the order asked; the shares of
functions and of two-call rows are quotas, the same in both splits.

Targets are unambiguous by construction: every argument except `datetime` is
copied verbatim from the user's text (a leading "the" before a landmark is not
part of a map query), and `datetime` resolves against the row's own current
date with these rules (seconds are always 00):

- "today", "later today", "tonight": the current date; only used for a time
  still ahead of the current time ("tonight" is 18:00 or later).
- "tomorrow" = +1 day; "the day after tomorrow" = +2; "in N days" = +N;
  "in a week" / "a week from today" = +7; "in two weeks" = +14.
- "on Friday" / "this Friday" (never said on a Friday) and "next Friday":
  the first Friday strictly after today (1-7 days ahead).
- "Friday next week": the Friday of the Monday-to-Sunday week after this one.
- "on March 5th" (no year): this year's March 5 if it is still ahead,
  otherwise next year's (never said on March 5 itself).
- "on the 14th": the 14th of this month if it is still ahead, otherwise of
  next month (never said on the 14th); "the 3rd of next month": day 3 of it.
- Dates with a year ("January 20th, 2026", "2025-11-26") are taken as written.
- Times: "3pm", "3:30 p.m.", "noon"/"midday" (12:00), "9 in the morning",
  "3 in the afternoon", "7 in the evening", "9 at night", "Saturday evening
  at 7" (19:00); a time without am/pm ("10:30", "15:00") is the 24-hour clock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import string
import sys
import unicodedata
from pathlib import Path

DEFAULT_SEED = 20260116
DEFAULT_TRAIN = 600
DEFAULT_EVAL = 150
DEFAULT_OUT = Path(__file__).resolve().parent / "mobile_actions_sample.jsonl"

# Current dates are drawn uniformly from this range (inclusive, to the second).
FIRST_NOW = dt.datetime(2024, 1, 1, 0, 0, 0)
LAST_NOW = dt.datetime(2027, 12, 31, 23, 59, 59)

MULTI_CALL_RATE = 0.125  # share of rows that ask for two calls
TYPO_RATE = 0.07  # share of rows with one typo in the request's own words (never in a value)
TERSE_RATE = 0.12  # share of rows typed all lower-case with no final punctuation

# The seven tools and the developer turn of the real rows: pipeline/mobile_actions.json, their one
# source (properties listed in signature order; every row shuffles both levels).
TASK = json.loads((Path(__file__).resolve().parents[2] / "pipeline" / "mobile_actions.json").read_text(encoding="utf-8"))
DEVELOPER_TEMPLATE = TASK["developer_template"].replace("{instruction}", TASK["instruction"])
TOOLS = tuple(
    (
        fn["name"],
        fn["description"],
        tuple((prop, spec["description"]) for prop, spec in fn["parameters"]["properties"].items()),
        tuple(fn["parameters"].get("required", ())),
    )
    for fn in (tool["function"] for tool in TASK["tools"])
)
PROPERTY_ORDER = {name: tuple(p for p, _ in props) for name, _, props, _ in TOOLS}

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# --------------------------------------------------------------------------- vocabulary

FIRST_NAMES = (
    "Elena", "Mateo", "Aisha", "Kenji", "Priya", "Lucas", "Amara", "Oluwaseun", "Sofia", "Liam",
    "Mei", "Arjun", "Fatima", "Noah", "Yuki", "Chloé", "Diego", "Ingrid", "Kwame", "Leila",
    "Hiroshi", "Ana", "Tomasz", "Zanele", "Omar", "Freya", "Rafael", "Anika", "Jamal", "Siobhan",
    "Min-jun", "Valentina", "Emre", "Nadia", "Pedro", "Astrid", "Ravi", "Camille", "Tariq", "Hannah",
    "Jorge", "Ayumi", "Bogdan", "Esther", "Kofi", "Lucía", "Matthias", "Nkechi", "Paolo", "Saanvi",
    "Thabo", "Ximena", "Yusuf", "Zoë", "Björn", "Carmen", "Dmitri", "Farah", "Gabriel", "Isabela",
    "Jonas", "Keiko", "Luca", "Marisol", "Nikolai", "Olivia", "Rohan", "Samira", "Wei", "Ethan",
)
LAST_NAMES = (
    "Vasiliev", "Dubois", "García", "Nakamura", "Okafor", "Sharma", "Müller", "Rossi", "Kim", "Nguyen",
    "Kowalski", "Mensah", "Haddad", "Johansson", "Silva", "Tanaka", "Hernández", "Novak", "Adeyemi", "Chen",
    "Schmidt", "Patel", "Moreau", "Yilmaz", "O'Brien", "Fernandes", "Larsen", "Ivanova", "Mbeki", "Costa",
    "Khan", "Lindqvist", "Romero", "Suzuki", "Abebe", "Bianchi", "Park", "Santos", "Wójcik", "Andersson",
    "Bakker", "Castillo", "Delgado", "Eze", "Fischer", "Gupta", "Horvat", "Ito", "Jensen", "Kaur",
    "Lopez", "Murphy", "Nowak", "Oyelaran", "Petrov", "Quispe", "Reyes", "Sato", "Thompson", "Walker",
)
EMAIL_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "hotmail.co.uk", "gmx.de",
    "corpmail.com", "northwind.io", "acme-corp.com", "brightlabs.co", "kestrel.dev", "lumenhealth.org",
    "orbitanalytics.com", "greenleaf.org", "example.com", "studio-nova.fr", "uni-mail.edu",
)
ROLE_ADDRESSES = (  # (local part, how the body greets them)
    ("support", "Support team"), ("hr", "HR team"), ("billing", "Billing team"), ("orders", "there"),
    ("info", "there"), ("events", "Events team"), ("reception", "there"), ("admissions", "Admissions office"),
)
# Topics that make sense for a role address such as support@ or billing@.
ROLE_SUBJECTS = ("Invoice #4821", "Order status", "Password reset", "Catering quote", "Apartment viewing",
                 "Interview availability", "Question about the report", "Leave request")

# (subject, body); the body may greet the recipient by {name}.
EMAIL_TOPICS = (
    ("Follow-up on Q4 Review Prep", "Hi {name}, I've scheduled our follow-up meeting to discuss the Q4 review strategy. Let me know if you have any conflicts. Thanks."),
    ("Lunch on Friday?", "Hey {name}, are you free for lunch on Friday? I was thinking of the new Thai place near the office."),
    ("Project Update", "Hi {name}, quick update: the prototype is done and testing starts next week."),
    ("Invoice #4821", "Hello {name}, please find the details of invoice #4821 below. Payment is due within 30 days."),
    ("Running late", "Sorry {name}, I'm running about 15 minutes late. Start without me."),
    ("Meeting notes", "Hi {name}, here are the notes from today's meeting. The action items are at the bottom."),
    ("Weekend plans", "Hey {name}, do you want to go hiking on Saturday morning?"),
    ("Happy birthday!", "Happy birthday {name}! Hope you have a wonderful day."),
    ("Contract draft", "Hi {name}, I've attached the revised contract draft. Could you review it by Thursday?"),
    ("Question about the report", "Hi {name}, I had a question about the figures on page 3 of the report. Do you have a minute to chat?"),
    ("Thank you", "Dear {name}, thank you so much for your help last week. I really appreciate it."),
    ("Team offsite", "Hi {name}, the team offsite is confirmed. Details to follow."),
    ("Reschedule our call", "Hi {name}, could we move our call to later in the week? Something came up."),
    ("Apartment viewing", "Hello {name}, I'd like to schedule a viewing of the apartment. When would suit you?"),
    ("Order status", "Hello {name}, I placed an order last Tuesday and haven't received a shipping confirmation yet."),
    ("Interview availability", "Dear {name}, thank you for the invitation. I'm available any afternoon next week."),
    ("Budget approval", "Hi {name}, the budget for the marketing campaign needs your approval by Monday."),
    ("Photos from the trip", "Hey {name}, I finally uploaded the photos from our trip. Enjoy!"),
    ("Leave request", "Hi {name}, I'd like to request leave from the 12th to the 16th."),
    ("Welcome aboard", "Hi {name}, welcome to the team! Your first day starts at 9."),
    ("Dinner reservation", "Hi {name}, I booked a table for four at 7. See you there."),
    ("Book club pick", "Hey {name}, this month's book club pick is The Remains of the Day."),
    ("Password reset", "Hello {name}, I can't log in to my account. Could you help me reset my password?"),
    ("Quarterly report", "Hi {name}, the quarterly report is ready for your review."),
    ("Volunteer schedule", "Hi {name}, can you cover the Saturday volunteer shift this month?"),
    ("Flight details", "Hi {name}, my flight lands at 6:40 pm. Can you pick me up?"),
    ("Conference slides", "Hi {name}, here is the final version of my conference slides."),
    ("Rent reminder", "Hi {name}, just a friendly reminder that rent is due on the 1st."),
    ("Code review", "Hey {name}, could you take a look at my pull request when you have a moment?"),
    ("Study session", "Hi {name}, want to study together for the exam on Wednesday?"),
    ("Catering quote", "Hello {name}, could you send me a quote for catering for 40 people?"),
    ("Welcome dinner", "Hi {name}, we're hosting a small welcome dinner for the new interns. Hope you can join."),
)

EVENT_TITLES = (
    "Dentist appointment", "Team standup", "Quarterly budget review", "Yoga class", "Piano lesson",
    "Parent-teacher conference", "Car service", "Flight to Berlin", "Book club", "Sprint planning",
    "Project kickoff", "Haircut", "Vet appointment for Milo", "Soccer practice", "Date night",
    "Farmers market", "Gym session", "Physiotherapy", "Tax consultation", "Design review",
    "1:1 with manager", "Board meeting", "Study group", "Wedding rehearsal", "Job interview at Northwind",
    "Concert at the Royal Albert Hall", "Movie night", "Cooking class", "Doctor's appointment",
    "Oil change", "Client presentation", "Dinner reservation at Nobu", "Volunteer shift",
    "Guitar lesson", "Marathon training run", "Hackathon kickoff", "Product demo", "Performance review",
    "Open house viewing", "Mom's birthday party", "Swim lesson", "Team retrospective",
    "Language exchange", "Q4 Review Strategy Session", "Pick up dry cleaning", "Webinar: Intro to DVC",
    "Eye exam", "Grocery delivery", "Pottery workshop", "Chess club",
)
EVENT_TITLES_WITH_PERSON = (  # {first}, {last} from the name pool
    "Lunch with {first}", "Call with {first} {last}", "Coffee with {first}", "{first}'s birthday dinner",
    "Meeting with Dr. {last}", "Interview with {first} {last}", "Meeting with Mr. {last}",
    "Catch-up with {first}", "Dinner at {first}'s", "Tennis with {first}",
)

# (as written in the request, the query): a leading "the" is not part of the query.
LANDMARKS = (
    "Eiffel Tower", "Golden Gate Bridge", "Colosseum", "Sydney Opera House", "Brandenburg Gate",
    "Taj Mahal", "Burj Khalifa", "Louvre Museum", "British Museum", "Tower of London", "Space Needle",
    "Grand Canyon", "Alhambra", "Acropolis", "Petronas Towers", "Forbidden City", "Rijksmuseum",
    "Empire State Building", "Statue of Liberty", "CN Tower",
)
PLACE_NAMES = (  # said without an article
    "Machu Picchu", "Hagia Sophia", "Niagara Falls", "Stonehenge", "Mount Fuji", "Times Square",
    "Central Park", "Shibuya Crossing", "Table Mountain", "Sagrada Familia", "Kyoto", "Lisbon",
    "Nairobi", "Reykjavik", "Cape Town", "Buenos Aires", "Ho Chi Minh City", "Vancouver", "Marrakech",
    "Seoul", "Krakow", "Montreal", "Austin, Texas", "Porto", "Wellington", "Cusco", "Edinburgh",
)
BUSINESSES = (
    "Blue Bottle Coffee", "Joe's Pizza on Carmine Street", "IKEA Tempe", "Whole Foods Market on Ocean Avenue",
    "Starbucks Reserve Roastery Milan", "Din Tai Fung", "Shake Shack Madison Square Park", "Trader Joe's",
    "Apple Store Regent Street", "Café de Flore", "Powell's City of Books", "Tim Hortons on Yonge Street",
    "Nando's Camden", "Harrods", "Galeries Lafayette", "El Corte Inglés Castellana", "Costco Burbank",
    "Mama's Fish House", "Ichiran Shibuya", "Pret A Manger King's Cross", "Barnes & Noble Union Square",
    "Walgreens on Market Street", "REI Seattle Flagship", "Hotel Adlon Kempinski",
)
NEARBY_SEARCHES = (
    "coffee shops near Union Square", "pharmacies in Shoreditch", "parking near Wembley Stadium",
    "gas stations near me", "vegan restaurants in Berlin Mitte", "EV charging stations near Palo Alto",
    "hardware stores near me", "ramen near Shinjuku Station", "bike rental in Amsterdam",
    "24-hour pharmacies near me", "playgrounds in Brooklyn Heights",
)
STREETS = (  # (street, city); an address is "NUMBER street, city"
    ("Baker Street", "London"), ("Amphitheatre Parkway", "Mountain View, CA"), ("Fifth Avenue", "New York"),
    ("Rue de Rivoli", "Paris"), ("Unter den Linden", "Berlin"), ("Calle de Alcalá", "Madrid"),
    ("Queen Street West", "Toronto"), ("Market Street", "San Francisco"), ("Orchard Road", "Singapore"),
    ("Collins Street", "Melbourne"), ("Via del Corso", "Rome"), ("Nevsky Prospekt", "Saint Petersburg"),
    ("Oxford Road", "Manchester"), ("Elm Street", "Springfield"), ("NW 23rd Avenue", "Portland, OR"),
    ("Sunset Boulevard", "Los Angeles"), ("Rua Augusta", "Lisbon"), ("Nanjing Road", "Shanghai"),
)

# --------------------------------------------------------------------------- request templates
# Templates are written lower-case first and without final punctuation; the
# renderer capitalizes, joins clauses and adds the ending. Fields are values
# that must reach the user's text unchanged; style noise only touches the rest.

FLASHLIGHT_ON = (
    ("turn on the flashlight", "."), ("flashlight on", ""), ("switch on my flashlight", "."),
    ("can you turn the flashlight on", "?"), ("it's really dark in here, turn on the torch please", "."),
    ("I need some light, turn on the flashlight", "."), ("enable the flashlight", "."),
    ("put the flashlight on", "."), ("could you switch the torch on for me", "?"),
    ("activate the flashlight", "."), ("please turn my phone's flashlight on", "."),
    ("I dropped my keys under the seat, flashlight on please", "!"), ("torch on", ""),
    ("light up the flashlight", "."), ("can I get the flashlight on", "?"),
)
FLASHLIGHT_OFF = (
    ("turn off the flashlight", "."), ("flashlight off", ""), ("switch off the torch", "."),
    ("can you turn the flashlight off", "?"), ("turn the flashlight off, it's draining my battery", "."),
    ("disable the flashlight", "."), ("kill the flashlight", "."), ("shut the flashlight off", "."),
    ("okay, you can turn off the torch now", "."), ("please switch my flashlight off", "."),
    ("found what I was looking for, flashlight off", "."), ("torch off", ""),
    ("could you turn off the flashlight for me", "?"), ("deactivate the flashlight", "."),
)
WIFI = (
    ("open wifi settings", "."), ("open the Wi-Fi settings", "."), ("take me to my wifi settings", "."),
    ("I need to connect to a different network, open Wi-Fi settings", "."),
    ("show me the wi-fi settings", "."), ("wifi settings please", ""),
    ("can you bring up the Wi-Fi settings", "?"), ("go to Wi-Fi settings", "."),
    ("my internet isn't working, open the wifi settings so I can check", "."),
    ("open up the wireless network settings", "."), ("where are my wifi settings? open them", "."),
    ("I want to join the hotel Wi-Fi, open the settings for it", "."),
    ("could you open Wi-Fi settings for me", "?"),
)
MAP = (
    ("show me {place} on the map", "."), ("where is {place}", "?"), ("can you show {place} on a map", "?"),
    ("pull up {place} on the map", "."), ("find {place} on the map for me", "."), ("map {place}", ""),
    ("I'm trying to find {place}, can you show me where it is", "?"), ("open the map at {place}", "."),
    ("show me where {place} is", "."), ("look up {place} on the map please", "."),
    ("display {place} on the map", "."), ("where exactly is {place}", "?"),
    ("I need directions to {place}, show it on the map", "."),
)
CONTACT_HEADS = (
    "add {first} {last} to my contacts", "create a new contact for {first} {last}",
    "save {first} {last} as a contact", "new contact: {first} {last}",
    "please make a contact named {first} {last}", "can you add a contact? first name {first}, last name {last}",
    "I met {first} {last} today, save them in my contacts",
    "add a contact with last name {last} and first name {first}",
    "put {first} {last} in my address book", "create contact {first} {last}",
    "could you save a new contact, {first} {last}",
)
CONTACT_DETAILS = {  # which optional fields are given -> ways to give them
    (): ("",),
    ("phone",): (" with the number {phone}", ", phone {phone}", " - their number is {phone}",
                 ". Number: {phone}", ", mobile {phone}", " and the phone number is {phone}"),
    ("email",): (" with the email {email}", ", email {email}", ". Their email address is {email}",
                 ", e-mail: {email}"),
    ("phone", "email"): (" with phone {phone} and email {email}", ", number {phone}, email {email}",
                         ". Phone: {phone}, e-mail: {email}", " - {phone}, {email}",
                         ". Their number is {phone} and their email is {email}"),
}
EMAIL_NO_BODY = (
    "send an email to {to} with the subject '{subject}'", "email {to} with subject \"{subject}\"",
    "write an email to {to}, subject: \"{subject}\"", "please send {to} an email titled '{subject}'",
    "can you email {to}? subject \"{subject}\"", "shoot an email over to {to} with the subject line \"{subject}\"",
    "compose a message to {to} with the subject '{subject}'",
)
EMAIL_WITH_BODY = (
    "send an email to {to} with the subject \"{subject}\" and the body \"{body}\"",
    "email {to}, subject \"{subject}\", saying \"{body}\"",
    "write to {to} with subject '{subject}' and message \"{body}\"",
    "please send {to} an email. Subject: \"{subject}\". Body: \"{body}\"",
    "can you send an email to {to}? The subject is \"{subject}\" and it should say \"{body}\"",
    "draft and send an email to {to} titled \"{subject}\" with the text \"{body}\"",
    "I need to email {to} about \"{subject}\", and the body should read \"{body}\"",
)
EMAIL_TO_THEM_NO_BODY = (  # after a contact clause that gives the address
    "send them an email with the subject \"{subject}\"", "email them with subject '{subject}'",
    "write them an email titled \"{subject}\"",
)
EMAIL_TO_THEM_WITH_BODY = (
    "send them an email with the subject \"{subject}\" and the body \"{body}\"",
    "email them, subject \"{subject}\", saying \"{body}\"",
    "write them an email titled '{subject}' that says \"{body}\"",
)
CALENDAR = (
    "schedule '{title}' {when}", "add an event called \"{title}\" to my calendar {when}",
    "create a calendar event titled '{title}' {when}", "put \"{title}\" on my calendar {when}",
    "can you set up an event named '{title}' {when}", "please schedule a calendar event titled '{title}' {when}",
    "set up a meeting called {title} {when}", "add {title} to my calendar {when}",
    "new calendar event: \"{title}\", {when}", "remind me of \"{title}\" with a calendar event {when}",
    "book '{title}' in my calendar {when}",
)
CALENDAR_WHEN_FIRST = (  # the date phrase opens the request
    "{when}, I have \"{title}\", please add it to my calendar", "{when} - schedule '{title}'",
)

# Multi-call joins; the second clause is not capitalized after these.
JOINERS = (" and ", " and then ", ", then ", ", and also ", " and after that ")
CHATTY_PREFIXES = (  # (prefix, capitalize what follows)
    ("Hey, ", False), ("Hi there! ", True), ("Quick favor: ", False), ("Okay so ", False),
    ("Hey assistant, ", False), ("Morning! ", True), ("Um, ", False), ("Hello! ", True),
)
SUFFIXES = (" Thanks!", " Thank you.", " thx", " Cheers.", " Much appreciated.", " Thanks in advance.")

# --------------------------------------------------------------------------- helpers


def ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 23 -> '23rd'."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ascii_fold(text: str) -> str:
    """'Müller' -> 'Muller', for e-mail addresses."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def make_tools(rng: random.Random) -> list[dict]:
    """All seven tools in a shuffled order, each one's properties shuffled too."""
    tools = []
    for name, description, props, required in rng.sample(TOOLS, len(TOOLS)):
        parameters: dict = {"type": "OBJECT", "properties": {}}
        for prop, prop_description in rng.sample(props, len(props)):
            parameters["properties"][prop] = {"type": "STRING", "description": prop_description}
        if required:
            parameters["required"] = list(required)
        tools.append({"function": {"name": name, "description": description, "parameters": parameters}})
    return tools


def make_now(rng: random.Random) -> dt.datetime:
    span = int((LAST_NOW - FIRST_NOW).total_seconds())
    return FIRST_NOW + dt.timedelta(seconds=rng.randint(0, span))


def make_person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def make_email(rng: random.Random, first: str, last: str) -> str:
    f = ascii_fold(first).lower().replace("'", "")
    l = ascii_fold(last).lower().replace("'", "")
    local = rng.choice((
        f"{f}.{l}", f"{f}{l}", f"{f[0]}{l}", f"{f}_{l}", f"{f}{rng.randint(1, 99)}",
        f"{l}.{f}", f"{f}.{l}{rng.randint(70, 99)}", f"{f[0]}.{l}",
    ))
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def make_phone(rng: random.Random) -> str:
    """A phone number in one of many national and international styles."""
    def d(n: int) -> str:
        return "".join(str(rng.randint(0, 9)) for _ in range(n))

    area = f"{rng.randint(2, 9)}{d(2)}"
    return rng.choice((
        f"({area}) 555-{d(4)}", f"{area}-555-{d(4)}", f"{area}.555.{d(4)}", f"+1 {area} 555 {d(4)}",
        f"+1-{area}-555-{d(4)}", f"{area}555{d(4)}", f"+44 20 {d(4)} {d(4)}", f"07700 900{d(3)}",
        f"+44 7700 900{d(3)}", f"+49 30 {d(8)}", f"+49 151 {d(8)}", f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
        f"06 {d(2)} {d(2)} {d(2)} {d(2)}", f"+91 9{d(4)} {d(5)}", f"+81 3-{d(4)}-{d(4)}", f"090-{d(4)}-{d(4)}",
        f"+55 11 9{d(4)}-{d(4)}", f"+61 4{d(2)} {d(3)} {d(3)}", f"0412 {d(3)} {d(3)}", f"555-{d(4)}",
        f"+234 803 {d(3)} {d(4)}", f"+27 82 {d(3)} {d(4)}",
    ))


def make_place(rng: random.Random) -> tuple[str, str]:
    """(how the user names the place, the map query)."""
    kind = rng.choices(("landmark", "name", "business", "address", "nearby"), (4, 4, 4, 4, 2))[0]
    if kind == "landmark":
        query = rng.choice(LANDMARKS)
        return f"the {query}", query
    if kind == "address":
        number = rng.choice((str(rng.randint(1, 2400)), f"{rng.randint(1, 300)}B"))
        street, city = rng.choice(STREETS)
        query = f"{number} {street}, {city}"
        return query, query
    query = rng.choice({"name": PLACE_NAMES, "business": BUSINESSES, "nearby": NEARBY_SEARCHES}[kind])
    return query, query


# --------------------------------------------------------------------------- dates and times


def format_datetime(day: dt.date, hour: int, minute: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00"


def make_time(rng: random.Random) -> tuple[int, int]:
    hour = rng.choices(range(7, 23), (3, 6, 8, 8, 7, 7, 6, 7, 7, 6, 5, 5, 4, 3, 2, 1))[0]
    minute = rng.choices((0, 30, 15, 45, 10, 20, 40, 50, 5), (55, 20, 9, 8, 2, 2, 2, 1, 1))[0]
    return hour, minute


def say_time(rng: random.Random, hour: int, minute: int) -> str:
    """'at 3pm', 'at 15:00', 'at noon', 'at 7 in the evening', ... for hour:minute."""
    h12 = hour % 12 or 12
    clock = f"{h12}" if minute == 0 else f"{h12}:{minute:02d}"
    styles = ["ampm", "ampm", "24h", "period"] + (["noon", "noon"] if (hour, minute) == (12, 0) else [])
    style = rng.choice(styles)
    if style == "noon":
        return rng.choice(("at noon", "at midday", "at 12 noon"))
    if style == "24h":  # a time without am/pm is the 24-hour clock
        return f"at {hour:02d}:{minute:02d}" if hour < 10 else f"at {hour}:{minute:02d}"
    if style == "period" and hour != 12:
        return f"at {clock} {period_of(hour, rng)}"
    full = f"{h12}:{minute:02d}"
    marker = rng.choice(("pm", " pm", " PM", "PM", " p.m.") if hour >= 12 else ("am", " am", " AM", "AM", " a.m."))
    return f"at {rng.choice((clock, clock, full))}{marker}"


def period_of(hour: int, rng: random.Random) -> str:
    if hour < 12:
        return "in the morning"
    if hour < 18:
        return "in the afternoon"
    if hour >= 21:
        return rng.choice(("in the evening", "at night"))
    return "in the evening"


def next_weekday(today: dt.date, weekday: int) -> dt.date:
    """The first `weekday` strictly after today (1-7 days ahead)."""
    return today + dt.timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)


def add_month(day: dt.date, n: int = 1) -> tuple[int, int]:
    """(year, month) n months after day's month."""
    index = day.year * 12 + day.month - 1 + n
    return index // 12, index % 12 + 1


def make_when(rng: random.Random, now: dt.datetime) -> tuple[str, str]:
    """A date-and-time phrase and the datetime it resolves to (rules in the module docstring)."""
    today = now.date()
    kinds = ("today", "tomorrow", "day_after", "in_days", "this_weekday", "next_weekday",
             "weekday_next_week", "period_weekday", "month_day", "month_day_year", "iso", "iso_full",
             "ordinal_day", "next_month_day")
    weights = (3, 14, 3, 8, 10, 9, 4, 7, 12, 6, 5, 2, 6, 3)
    while True:
        kind = rng.choices(kinds, weights)[0]
        hour, minute = make_time(rng)
        if kind == "today":
            if (hour, minute) <= (now.hour, now.minute):
                continue  # already past: pick again
            if hour >= 18 and minute == 0 and rng.random() < 0.5:
                return f"tonight at {hour - 12}", format_datetime(today, hour, minute)
            return f"{rng.choice(('today', 'later today'))} {say_time(rng, hour, minute)}", \
                format_datetime(today, hour, minute)
        if kind == "period_weekday":
            # "Saturday evening at 7", "tomorrow morning at 9:30"
            if hour == 12:
                continue
            period = "morning" if hour < 12 else "afternoon" if hour < 18 else "evening"
            h12 = hour % 12 or 12
            clock = f"{h12}" if minute == 0 else f"{h12}:{minute:02d}"
            weekday = rng.randrange(7)
            if rng.random() < 0.35:
                day, date_text = today + dt.timedelta(days=1), "tomorrow"
            elif weekday == today.weekday():
                day, date_text = next_weekday(today, weekday), f"next {WEEKDAYS[weekday]}"
            else:
                day = next_weekday(today, weekday)
                date_text = rng.choice(("this ", "next ", "on ", "")) + WEEKDAYS[weekday]
            return f"{date_text} {period} at {clock}", format_datetime(day, hour, minute)
        if kind == "iso_full":
            day = today + dt.timedelta(days=rng.randint(1, 400))
            stamp = format_datetime(day, hour, minute)
            return f"{rng.choice(('for', 'at', 'on'))} {stamp}", stamp

        if kind == "tomorrow":
            day, date_text = today + dt.timedelta(days=1), "tomorrow"
        elif kind == "day_after":
            day, date_text = today + dt.timedelta(days=2), "the day after tomorrow"
        elif kind == "in_days":
            n = rng.choice((2, 3, 3, 4, 5, 6, 7, 7, 10, 14))
            if n == 7:
                date_text = rng.choice(("in a week", "a week from today", "in 7 days"))
            elif n == 14:
                date_text = rng.choice(("in two weeks", "in 14 days"))
            else:
                date_text = f"in {rng.choice((str(n), NUMBER_WORDS[n]))} days"
            day = today + dt.timedelta(days=n)
        elif kind in ("this_weekday", "next_weekday"):
            weekday = rng.randrange(7)
            if kind == "this_weekday" and weekday == today.weekday():
                continue  # "this Friday" said on a Friday is ambiguous
            day = next_weekday(today, weekday)
            prefix = rng.choice(("this ", "on ", "this coming ")) if kind == "this_weekday" else "next "
            date_text = prefix + WEEKDAYS[weekday]
        elif kind == "weekday_next_week":
            weekday = rng.randrange(7)
            day = today - dt.timedelta(days=today.weekday()) + dt.timedelta(days=7 + weekday)
            date_text = rng.choice((f"{WEEKDAYS[weekday]} next week", f"next week on {WEEKDAYS[weekday]}"))
        elif kind == "month_day":
            month = rng.randint(1, 12)
            dom = rng.randint(1, 28 if month == 2 else 30)
            if (month, dom) == (today.month, today.day):
                continue
            year = today.year if (month, dom) > (today.month, today.day) else today.year + 1
            day = dt.date(year, month, dom)
            name = MONTHS[month - 1]
            date_text = rng.choice((f"on {name} {ordinal(dom)}", f"on {name} {dom}", f"on {dom} {name}",
                                    f"on the {ordinal(dom)} of {name}", f"{name} {ordinal(dom)}"))
        elif kind == "month_day_year":
            day = today + dt.timedelta(days=rng.randint(1, 500))
            name = MONTHS[day.month - 1]
            date_text = rng.choice((f"on {name} {ordinal(day.day)}, {day.year}", f"on {day.day} {name} {day.year}",
                                    f"on {name} {day.day}, {day.year}"))
        elif kind == "iso":
            day = today + dt.timedelta(days=rng.randint(1, 400))
            date_text = f"{rng.choice(('on ', 'for ', ''))}{day.isoformat()}"
        elif kind == "ordinal_day":
            dom = rng.randint(1, 28)
            if dom == today.day:
                continue
            year, month = (today.year, today.month) if dom > today.day else add_month(today)
            day = dt.date(year, month, dom)
            date_text = f"on the {ordinal(dom)}"
        else:  # next_month_day
            dom = rng.randint(1, 28)
            year, month = add_month(today)
            day = dt.date(year, month, dom)
            date_text = rng.choice((f"on the {ordinal(dom)} of next month", f"next month on the {ordinal(dom)}"))

        time_text = say_time(rng, hour, minute)
        if rng.random() < 0.2:
            text = f"{time_text} {date_text}"
        else:
            text = f"{date_text} {time_text}"
        return text, format_datetime(day, hour, minute)


# --------------------------------------------------------------------------- one clause per call
# Each returns (template, values, ending, call); call = (name, arguments).


def clause_simple(rng: random.Random, name: str) -> tuple:
    pool = {"turn_on_flashlight": FLASHLIGHT_ON, "turn_off_flashlight": FLASHLIGHT_OFF,
            "open_wifi_settings": WIFI}[name]
    template, ending = rng.choice(pool)
    return template, {}, ending, (name, {})


def clause_map(rng: random.Random) -> tuple:
    said, query = make_place(rng)
    template, ending = rng.choice(MAP)
    return template, {"place": said}, ending, ("show_map", {"query": query})


def clause_contact(rng: random.Random, need_email: bool = False) -> tuple:
    first, last = make_person(rng)
    if need_email:
        given = rng.choice((("email",), ("phone", "email")))
    else:
        given = rng.choices(((), ("phone",), ("email",), ("phone", "email")), (2, 5, 2, 3))[0]
    values = {"first": first, "last": last}
    args = {"first_name": first, "last_name": last}
    if "phone" in given:
        values["phone"] = args["phone_number"] = make_phone(rng)
    if "email" in given:
        values["email"] = args["email"] = make_email(rng, first, last)
    template = rng.choice(CONTACT_HEADS) + rng.choice(CONTACT_DETAILS[given])
    return template, values, rng.choice((".", ".", "")), ("create_contact", args)


def make_recipient(rng: random.Random) -> tuple[str, str, tuple]:
    """(e-mail address, how the body greets them, the topics that suit them)."""
    if rng.random() < 0.15:
        local, greeting = rng.choice(ROLE_ADDRESSES)
        topics = tuple(t for t in EMAIL_TOPICS if t[0] in ROLE_SUBJECTS)
        return f"{local}@{rng.choice(EMAIL_DOMAINS)}", greeting, topics
    first, last = make_person(rng)
    return make_email(rng, first, last), first, EMAIL_TOPICS


def clause_email(rng: random.Random, recipient: tuple | None = None, to_them: bool = False) -> tuple:
    """An e-mail request; with to_them, the recipient is "them" (a contact just given)."""
    to, greeting, topics = recipient or make_recipient(rng)
    subject, body = rng.choice(topics)
    body = body.format(name=greeting)
    args = {"to": to, "subject": subject}
    values = {} if to_them else {"to": to}
    values["subject"] = subject
    if rng.random() < 0.6:
        args["body"] = values["body"] = body
        template = rng.choice(EMAIL_TO_THEM_WITH_BODY if to_them else EMAIL_WITH_BODY)
    else:
        template = rng.choice(EMAIL_TO_THEM_NO_BODY if to_them else EMAIL_NO_BODY)
    if "'{subject}'" in template and "'" in subject:
        template = template.replace("'{subject}'", '"{subject}"')
    return template, values, rng.choice((".", ".", "")), ("send_email", args)


def clause_calendar(rng: random.Random, now: dt.datetime, allow_when_first: bool = True) -> tuple:
    if rng.random() < 0.3:
        first, last = make_person(rng)
        title = rng.choice(EVENT_TITLES_WITH_PERSON).format(first=first, last=last)
    else:
        title = rng.choice(EVENT_TITLES)
    when, stamp = make_when(rng, now)
    if allow_when_first and rng.random() < 0.1:
        template = rng.choice(CALENDAR_WHEN_FIRST)
        when = when[0].upper() + when[1:]
    else:
        template = rng.choice(CALENDAR)
        while "{title} " in template and not when[0].islower():
            # An unquoted title followed by "Friday ..." or "2026-..." would blur where the title ends.
            template = rng.choice(CALENDAR)
    if "'{title}'" in template and "'" in title:
        template = template.replace("'{title}'", '"{title}"')
    ending = "?" if template.startswith("can you") else rng.choice((".", ".", ""))
    call = ("create_calendar_event", {"title": title, "datetime": stamp})
    return template, {"title": title, "when": when}, ending, call


SINGLE_WEIGHTS = {  # relative share of single-call rows per function
    "create_calendar_event": 16, "send_email": 14, "create_contact": 15, "show_map": 15,
    "turn_on_flashlight": 13, "turn_off_flashlight": 13, "open_wifi_settings": 14,
}
MULTI_COMBOS = (  # (first call, second call, weight), in the order the user asks
    ("create_calendar_event", "send_email", 5), ("send_email", "create_calendar_event", 2),
    ("create_contact", "send_email", 4), ("show_map", "create_calendar_event", 2),
    ("create_contact", "create_calendar_event", 2), ("turn_on_flashlight", "open_wifi_settings", 2),
    ("open_wifi_settings", "turn_off_flashlight", 2), ("turn_off_flashlight", "show_map", 1),
)


def make_clause(rng: random.Random, name: str, now: dt.datetime, first: bool = True) -> tuple:
    if name == "show_map":
        return clause_map(rng)
    if name == "create_contact":
        return clause_contact(rng)
    if name == "send_email":
        return clause_email(rng)
    if name == "create_calendar_event":
        return clause_calendar(rng, now, allow_when_first=first)
    return clause_simple(rng, name)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split total into whole shares proportional to weights (largest remainder, ties to the first)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def make_plans(rng: random.Random, count: int) -> list[tuple[str, ...]]:
    """What each of a split's rows calls, in order: exact shares, shuffled.

    Quotas rather than independent draws keep every split balanced (and the
    multi-call share at MULTI_CALL_RATE) whatever the seed and size.
    """
    n_multi = round(count * MULTI_CALL_RATE)
    plans: list[tuple[str, ...]] = []
    for name, n in zip(SINGLE_WEIGHTS, apportion(count - n_multi, list(SINGLE_WEIGHTS.values()))):
        plans += [(name,)] * n
    for (first, second, _), n in zip(MULTI_COMBOS, apportion(n_multi, [w for _, _, w in MULTI_COMBOS])):
        plans += [(first, second)] * n
    rng.shuffle(plans)
    return plans


def make_clauses(rng: random.Random, now: dt.datetime, plan: tuple[str, ...]) -> list[tuple]:
    if len(plan) == 1:
        return [make_clause(rng, plan[0], now)]
    first, second = plan
    if plan == ("create_contact", "send_email"):
        # "... and send them an email": the recipient is the new contact's address.
        contact = clause_contact(rng, need_email=True)
        email = clause_email(rng, (contact[3][1]["email"], contact[1]["first"], EMAIL_TOPICS), to_them=True)
        return [contact, email]
    return [make_clause(rng, first, now), make_clause(rng, second, now, first=False)]


# --------------------------------------------------------------------------- rendering


def add_typo(rng: random.Random, literals: list[str]) -> list[str]:
    """One swap, drop or doubling of a letter inside a word of the template (never in a value)."""
    spots = []
    for i, literal in enumerate(literals):
        start = None
        for j, ch in enumerate(literal + " "):
            if ch.isalpha():
                start = j if start is None else start
            else:
                if start is not None and j - start >= 4:
                    spots.append((i, start, j))
                start = None
    if not spots:
        return literals
    i, start, end = rng.choice(spots)
    word = literals[i][start:end]
    k = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        word = word[:k] + word[k + 1] + word[k] + word[k + 2:]
    elif kind == "drop":
        word = word[:k] + word[k + 1:]
    else:
        word = word[:k] + word[k] + word[k:]
    literals = list(literals)
    literals[i] = literals[i][:start] + word + literals[i][end:]
    return literals


def render_request(rng: random.Random, clauses: list[tuple]) -> str:
    """Join the clauses' templates, add style noise to their own words, then fill in the values."""
    template = clauses[0][0]
    for clause in clauses[1:]:
        template += rng.choice(JOINERS) + clause[0]
    ending = clauses[-1][2]
    values = {k: v for clause in clauses for k, v in clause[1].items()}

    parts = list(string.Formatter().parse(template))  # (literal, field, spec, conversion)
    literals = [literal for literal, _, _, _ in parts]
    fields = [field for _, field, _, _ in parts]
    terse = rng.random() < TERSE_RATE
    if rng.random() < TYPO_RATE:
        literals = add_typo(rng, literals)
    if terse:
        literals = [literal.lower() for literal in literals]
        ending = ""
    elif literals[0]:
        literals[0] = literals[0][0].upper() + literals[0][1:]
    text = "".join(lit + (values[f] if f is not None else "") for lit, f in zip(literals, fields)) + ending

    if not terse and rng.random() < 0.2:
        prefix, capitalize = rng.choice(CHATTY_PREFIXES)
        if literals[0] and not capitalize and not text.startswith(("I ", "I'")):
            text = text[0].lower() + text[1:]
        text = prefix + text
    if not terse and rng.random() < 0.15:
        if text[-1] not in ".?!":
            text += "."
        text += rng.choice(SUFFIXES)
    return text


def make_row(rng: random.Random, split: str, plan: tuple[str, ...]) -> dict:
    now = make_now(rng)
    tools = make_tools(rng)
    clauses = make_clauses(rng, now, plan)
    user_text = render_request(rng, clauses)
    calls = []
    for _, _, _, (name, args) in clauses:
        ordered = {p: args[p] for p in PROPERTY_ORDER[name] if p in args}
        calls.append({"function": {"name": name, "arguments": ordered}})
    developer = DEVELOPER_TEMPLATE.format(now=now.strftime("%Y-%m-%dT%H:%M:%S"), weekday=WEEKDAYS[now.weekday()])
    return {
        "metadata": split,
        "tools": tools,
        "messages": [
            {"role": "developer", "content": developer},
            {"role": "user", "content": user_text},
            {"role": "assistant", "tool_calls": calls},
        ],
    }


def generate_rows(seed: int, n_train: int, n_eval: int) -> list[dict]:
    """Train rows then eval rows; no user request appears twice in the whole file.

    A repeated request is drawn again with the same plan, so that the few
    wordings of the no-argument functions do not thin out their share.
    """
    rng = random.Random(seed)
    rows, seen = [], set()
    for split, count in (("train", n_train), ("eval", n_eval)):
        for plan in make_plans(rng, count):
            for _ in range(1000):
                row = make_row(rng, split, plan)
                if row["messages"][1]["content"] not in seen:
                    break
            else:
                raise SystemExit(f"error: ran out of distinct wordings for {plan}; ask for fewer rows.")
            seen.add(row["messages"][1]["content"])
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN, help=f"train rows (default {DEFAULT_TRAIN})")
    parser.add_argument("--eval", type=int, default=DEFAULT_EVAL, help=f"eval rows (default {DEFAULT_EVAL})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSONL (default: beside this script)")
    args = parser.parse_args(argv)
    if args.train < 0 or args.eval < 0:
        parser.error("--train and --eval must be 0 or more")

    rows = generate_rows(args.seed, args.train, args.eval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.train} train + {args.eval} eval rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
