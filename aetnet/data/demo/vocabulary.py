"""Vocabulary of the synthetic demo pages: names, places, form fields, menu items, sentences."""

from __future__ import annotations

import random

RVL_CDIP_CLASSES = (
    "letter", "form", "email", "handwritten", "advertisement", "scientific report",
    "scientific publication", "specification", "file folder", "news article", "budget", "invoice",
    "presentation", "questionnaire", "resume", "memo",
)  # the official 16-class order of labels/readme.txt: a class id is its index here


def _v(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split("|"))


FIRST_NAMES = _v("John|Mary|Robert|Linda|James|Susan|David|Karen|Michael|Nancy|William|Carol|"
                 "Thomas|Helen|Richard|Ruth|Charles|Janet|Steven|Laura|Paul|Diane|Mark|Anne")
LAST_NAMES = _v("Smith|Johnson|Brown|Miller|Davis|Wilson|Moore|Taylor|Anderson|Thomas|Jackson|"
                "White|Harris|Martin|Thompson|Clark|Lewis|Walker|Hall|Allen|Young|King|Wright|Green")
MONTHS = _v("January|February|March|April|May|June|July|August|September|October|November|"
            "December")
STREETS = _v("Main|Oak|Maple|Park|Pine|Cedar|Elm|Lake|Hill|Washington|Market|Church|Spring|River")
STREET_TYPES = _v("Street|Avenue|Road|Drive|Lane|Boulevard")
CODE_PREFIXES = _v("REF|PO|INV|ACC|DOC|REQ")
CHOICES = {
    "company": _v("Acme Corp|Globex Inc|Initech Ltd|Summit Supply Co|Northwind Traders|"
                  "Blue River Labs|Atlas Paper Co|Pioneer Foods Inc|Harbor Research Group|"
                  "Keystone Office Products|Redwood Consulting|Union Printing Co"),
    "city": _v("Boston|Chicago|Denver|Atlanta|Richmond|Raleigh|Dallas|Seattle|Portland|Phoenix|"
               "Memphis|Louisville|Columbus|Baltimore"),
    "department": _v("Research|Marketing|Accounting|Purchasing|Legal|Sales|Personnel|Quality Control|"
                     "Public Affairs|Operations"),
    "title": _v("Manager|Director|Assistant|Analyst|Vice President|Supervisor|Coordinator|Chemist|"
                "Accountant|Sales Representative"),
    "product": _v("Office Supplies|Printer Paper|Lab Equipment|Filing Cabinets|Computer Software|"
                  "Shipping Boxes|Toner Cartridges|Desk Chairs|Sample Kits|Display Materials"),
    "status": _v("Approved|Pending|Completed|In Progress|On Hold|Rejected"),
    "method": _v("Mail|Fax|Courier|Hand Delivery|Overnight"),
}
FORM_HEADERS = _v("PURCHASE ORDER FORM|EMPLOYEE INFORMATION|RESEARCH PROPOSAL REQUEST|"
                  "FAX TRANSMITTAL|EXPENSE REPORT|PROJECT APPROVAL FORM|CUSTOMER ACCOUNT FORM|"
                  "SHIPPING REQUEST|BUDGET REQUEST|VENDOR REGISTRATION")
FORM_CODES = _v("Form|Document|Control No.")
FIELDS = (("Name:", "name"), ("Date:", "date"), ("To:", "name"), ("From:", "name"),
          ("Phone:", "phone"), ("Fax:", "phone"), ("Company:", "company"),
          ("Address:", "address"), ("City:", "city"), ("Account No.:", "number"),
          ("Department:", "department"), ("Title:", "title"), ("Amount:", "money"),
          ("Total Cost:", "money"), ("Reference:", "code"), ("Approved By:", "name"),
          ("Quantity:", "qty"), ("Product:", "product"), ("Due Date:", "date"),
          ("Status:", "status"), ("Delivery Method:", "method"), ("Contact:", "name"))
FORM_NOTES = _v("Please return this form to the main office by the end of the month.|"
                "All information on this form is confidential.|"
                "Attach receipts for every expense over fifty dollars.|"
                "Use black ink and print clearly.|"
                "Questions about this form should be sent to the accounting department.|"
                "Keep one copy for your records.")
MENU_ITEMS = _v("Ice Tea|Hot Tea|Lemonade|Orange Juice|Coffee Latte|Iced Coffee|Mineral Water|"
                "Chicken Burger|Beef Burger|Fried Rice|Fried Noodles|Chicken Wings|French Fries|"
                "Caesar Salad|Garden Salad|Tomato Soup|Grilled Fish|Club Sandwich|Cheese Cake|"
                "Chocolate Cake|Banana Bread|Fruit Bowl|Pepper Steak|Spicy Tofu|Egg Roll|Milkshake")
SUBTOTAL_KEYS = _v("SUBTOTAL|Sub Total|Subtotal")
TAX_KEYS = _v("TAX|Tax 10%|PB1 10%")
TOTAL_KEYS = _v("TOTAL|Grand Total|Total")
CASH_KEYS = _v("CASH|Cash")
CHANGE_KEYS = _v("CHANGE|Change")
STORES = _v("Corner Cafe|Green Leaf Kitchen|Sunrise Bakery|City Noodle House|Harbor Grill|"
            "Golden Spoon|Maple Coffee Bar|Red Lantern Diner")
RECEIPT_FOOTERS = _v("THANK YOU|Thank you for your visit|Please come again")
LETTER_SENTENCES = _v(
    "Thank you for your letter regarding the proposed research program.|"
    "We are pleased to confirm that the samples were shipped last week.|"
    "I would like to thank you for meeting with our staff during your visit.|"
    "Please find enclosed a copy of the signed agreement for your files.|"
    "Our committee reviewed your request and has approved the funding.|"
    "If you have any questions, please do not hesitate to call me.|"
    "We look forward to working with you on this important project.|"
    "The results of the study will be presented at the annual meeting.")
MEMO_SENTENCES = _v(
    "The quarterly budget review will take place next Tuesday in the main conference room.|"
    "All department heads should submit their reports before the meeting.|"
    "Please note that the new travel policy takes effect on the first of the month.|"
    "Copies of the revised schedule are available from the personnel office.|"
    "This memo replaces the earlier notice about the office move.|"
    "Contact the project coordinator if your group needs additional staff.")
MEMO_SUBJECTS = _v("Budget Review|Travel Policy|Office Move|Staff Meeting|Project Schedule|"
                   "Quarterly Report|Safety Training")
RVL_FORM_TITLES = _v("APPLICATION FORM|REGISTRATION FORM|REQUEST FORM|ORDER FORM")
DOC_TITLES = _v("INVOICE|STATEMENT|ORDER SUMMARY|ACCOUNT NOTICE|PAYMENT RECORD")
DOCVQA_FACTS = (  # (line label, value kind, questions whose answer is the value)
    ("Invoice number:", "number", ("What is the invoice number?", "Which invoice number is given?")),
    ("Date:", "longdate", ("What is the date mentioned in this document?", "What is the date?")),
    ("Total:", "money", ("What is the total amount?", "How much is the total?")),
    ("Company:", "company", ("What is the name of the company?", "Which company is mentioned?")),
    ("Contact:", "name", ("Who is the contact person?", "What is the name of the contact?")),
    ("Phone:", "phone", ("What is the phone number?",)),
    ("City:", "city", ("In which city is the office located?",)),
    ("Department:", "department", ("Which department is mentioned?",)),
    ("Account number:", "number", ("What is the account number?",)),
    ("Reference:", "code", ("What is the reference code?",)),
)



def money(rng: random.Random, lo: int = 20, hi: int = 9000) -> str:
    return f"${rng.randint(lo, hi) * 5 / 4:,.2f}"  # quarters, so cents vary: $1,250.75


def field_value(kind: str, rng: random.Random) -> str:
    """A value for a form field of vocabulary kind ``kind`` (see ``FIELDS``)."""
    if kind == "name":
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    if kind == "date":
        return f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1985, 1999)}"
    if kind == "longdate":
        return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1985, 1999)}"
    if kind == "phone":
        return f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}"
    if kind == "address":
        return f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
    if kind == "money":
        return money(rng)
    if kind == "number":
        return str(rng.randint(1000, 99999))
    if kind == "code":
        return f"{rng.choice(CODE_PREFIXES)}-{rng.randint(100, 9999)}"
    if kind == "qty":
        return str(rng.randint(1, 250))
    return rng.choice(CHOICES[kind])  # company, city, department, title, product

