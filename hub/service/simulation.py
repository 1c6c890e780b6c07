"""The demo's make-believe world, as pure functions: a sample batch of claims, the demo
partner network, and what a simulated partner does with a case it is assigned.

Everything is deterministic for a seed. ``generate_sample`` takes a ``tag`` (the demo
uses its batch's timestamp) that changes invoice numbers, registration / VAT ids and
postal codes, and nothing else: the same seed gives the same story, and a second demo
in the same database still opens new cases instead of landing on the first one's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import orjson

from hub.domain.routing import PartnerProfile
from partner_sdk import messages as m

__all__ = [
    "COUNTRIES",
    "DEMO_CREDITOR",
    "DEMO_PARTNERS",
    "Country",
    "SampleRow",
    "Step",
    "build_report",
    "generate_sample",
    "partner_steps",
    "sample_countries",
]

DEMO_CREDITOR = "flexspace"


@dataclass(frozen=True)
class Country:
    """What it takes to invent plausible debtors of one country."""

    code: str
    currency: str
    language: str
    phone: str
    #: "City=postal code[=region]|..."
    cities: str
    first_names: str
    last_names: str
    #: company legal forms, "|"-separated
    suffixes: str
    streets: str
    #: registration id and VAT id patterns: "#" is a random digit
    registration: str
    vat: str
    tld: str
    number_first: bool = False

    def pick(self, rng: random.Random, what: str) -> str:
        options: str = getattr(self, what)
        return rng.choice(options.split("|"))


_C = Country
#: In order of how much the creditor invoices there; ``--countries N`` takes the first N.
# fmt: off
COUNTRIES: tuple[Country, ...] = (
    _C("DE", "EUR", "de", "+49", "Berlin=10115|München=80331|Hamburg=20095|Köln=50667",
       "Lukas|Anna|Jonas|Lea|Felix|Marie|Paul|Sophie",
       "Müller|Schmidt|Schneider|Fischer|Weber|Wagner|Becker|Hoffmann",
       "GmbH|AG|GmbH & Co. KG", "Hauptstraße|Bahnhofstraße|Gartenweg|Lindenallee",
       "HRB ######", "DE#########", "de"),
    _C("FR", "EUR", "fr", "+33", "Paris=75008|Lyon=69002|Marseille=13001|Toulouse=31000",
       "Camille|Louis|Léa|Hugo|Chloé|Jules|Manon|Arthur",
       "Martin|Bernard|Dubois|Thomas|Robert|Richard|Petit|Durand",
       "SARL|SAS|SA", "rue de la République|avenue Victor Hugo|boulevard Haussmann|rue du Commerce",
       "#########", "FR###########", "fr", True),
    _C("GB", "GBP", "en", "+44",
       "London=EC1A 1BB|Manchester=M1 1AE|Birmingham=B1 1AA|Edinburgh=EH1 1YZ",
       "Oliver|Amelia|George|Isla|Harry|Ava|Jack|Emily",
       "Smith|Jones|Taylor|Brown|Williams|Wilson|Johnson|Davies",
       "Ltd|LLP|plc", "High Street|Station Road|Church Lane|Victoria Road",
       "0#######", "GB#########", "co.uk", True),
    _C("US", "USD", "en", "+1",
       "New York=10001=NY|Chicago=60601=IL|Austin=73301=TX|San Francisco=94105=CA",
       "James|Mary|Michael|Jennifer|Robert|Linda|David|Sarah",
       "Johnson|Miller|Davis|Garcia|Rodriguez|Martinez|Anderson|Clark",
       "Inc.|LLC|Corp.", "Main Street|Oak Avenue|Park Avenue|Market Street",
       "##-#######", "", "com", True),
    _C("NL", "EUR", "nl", "+31",
       "Amsterdam=1012 AB|Rotterdam=3011 AA|Utrecht=3511 AB|Den Haag=2511 AA",
       "Daan|Emma|Sem|Julia|Lucas|Mila|Levi|Tess",
       "de Jong|Jansen|de Vries|van den Berg|Bakker|Visser|Smit|Meijer",
       "B.V.|N.V.|V.O.F.", "Kerkstraat|Dorpsstraat|Stationsweg|Molenweg",
       "########", "NL#########B01", "nl"),
    _C("ES", "EUR", "es", "+34", "Madrid=28001|Barcelona=08001|Valencia=46001|Sevilla=41001",
       "Lucía|Hugo|Martina|Daniel|Sofía|Pablo|María|Alejandro",
       "García|Fernández|González|Rodríguez|López|Martínez|Sánchez|Pérez",
       "S.L.|S.A.", "Calle Mayor|Gran Vía|Calle de Alcalá|Paseo de Gracia",
       "B########", "ESB########", "es"),
    _C("IT", "EUR", "it", "+39", "Milano=20121|Roma=00184|Torino=10121|Bologna=40121",
       "Leonardo|Sofia|Francesco|Giulia|Alessandro|Aurora|Lorenzo|Ginevra",
       "Rossi|Russo|Ferrari|Esposito|Bianchi|Romano|Colombo|Ricci",
       "S.r.l.|S.p.A.", "Via Roma|Corso Italia|Via Garibaldi|Via Dante",
       "MI-#######", "IT###########", "it"),
    _C("PL", "PLN", "pl", "+48", "Warszawa=00-001|Kraków=30-001|Wrocław=50-001|Gdańsk=80-001",
       "Jan|Zuzanna|Antoni|Julia|Jakub|Maja|Szymon|Zofia",
       "Nowak|Kowalski|Wiśniewski|Wójcik|Kowalczyk|Kamiński|Lewandowski|Zieliński",
       "Sp. z o.o.|S.A.", "ul. Marszałkowska|ul. Długa|ul. Polna|ul. Lipowa",
       "00########", "PL##########", "pl"),
    _C("SE", "SEK", "sv", "+46", "Stockholm=111 20|Göteborg=411 01|Malmö=211 20|Uppsala=753 10",
       "Alice|William|Maja|Oscar|Elsa|Lucas|Astrid|Hugo",
       "Andersson|Johansson|Karlsson|Nilsson|Eriksson|Larsson|Olsson|Persson",
       "AB|HB", "Storgatan|Drottninggatan|Kungsgatan|Sveavägen",
       "556###-####", "SE##########01", "se"),
    _C("BE", "EUR", "fr", "+32", "Bruxelles=1000|Antwerpen=2000|Gent=9000|Liège=4000",
       "Noah|Olivia|Louis|Emma|Arthur|Louise|Jules|Mila",
       "Peeters|Janssens|Maes|Jacobs|Mertens|Willems|Claes|Dubois",
       "BV|SRL|NV", "Rue de la Loi|Meir|Veldstraat|Avenue Louise",
       "0###.###.###", "BE0#########", "be"),
    _C("AT", "EUR", "de", "+43", "Wien=1010|Graz=8010|Linz=4020|Salzburg=5020",
       "Maximilian|Anna|Elias|Marie|Felix|Laura|Jakob|Lena",
       "Gruber|Huber|Bauer|Wagner|Müller|Pichler|Steiner|Moser",
       "GmbH|AG|KG", "Hauptplatz|Mariahilfer Straße|Landstraße|Ringstraße",
       "FN ######a", "ATU########", "at"),
    _C("IE", "EUR", "en", "+353",
       "Dublin=D02 X285|Cork=T12 W8K2|Galway=H91 E2K1|Limerick=V94 T9PX",
       "Jack|Grace|Conor|Emily|Seán|Aoife|Darragh|Saoirse",
       "Murphy|Kelly|O'Sullivan|Walsh|O'Brien|Byrne|Ryan|O'Connor",
       "Ltd|DAC", "Main Street|O'Connell Street|Grafton Street|Patrick Street",
       "######", "IE#######A", "ie", True),
    _C("PT", "EUR", "pt", "+351",
       "Lisboa=1100-148|Porto=4000-322|Braga=4700-035|Coimbra=3000-150",
       "Santiago|Maria|Francisco|Leonor|Tomás|Matilde|Afonso|Beatriz",
       "Silva|Santos|Ferreira|Pereira|Oliveira|Costa|Rodrigues|Martins",
       "Lda.|S.A.", "Rua Augusta|Avenida da Liberdade|Rua de Santa Catarina|Rua do Carmo",
       "5########", "PT5########", "pt"),
    _C("FI", "EUR", "fi", "+358", "Helsinki=00100|Espoo=02100|Tampere=33100|Turku=20100",
       "Eino|Aino|Väinö|Helmi|Onni|Aada|Leo|Sofia",
       "Korhonen|Virtanen|Mäkinen|Nieminen|Mäkelä|Hämäläinen|Laine|Heikkinen",
       "Oy|Oyj|Ky", "Mannerheimintie|Hämeenkatu|Aleksanterinkatu|Kauppakatu",
       "#######-#", "FI########", "fi"),
    _C("GR", "EUR", "el", "+30",
       "Athina=105 57|Thessaloniki=546 24|Patra=262 21|Irakleio=712 02",
       "Georgios|Maria|Ioannis|Eleni|Konstantinos|Aikaterini|Dimitrios|Vasiliki",
       "Papadopoulos|Papadakis|Georgiou|Nikolaidis|Oikonomou|Karagiannis|Vlachos|Dimitriou",
       "A.E.|E.P.E.|I.K.E.", "Odos Ermou|Leoforos Syngrou|Odos Stadiou|Odos Tsimiski",
       "############", "EL#########", "gr"),
    _C("LU", "EUR", "fr", "+352",
       "Luxembourg=L-1118|Esch-sur-Alzette=L-4002|Differdange=L-4501|Dudelange=L-3401",
       "Luca|Emma|Gabriel|Lara|Noah|Mia|Leo|Zoé",
       "Schmit|Muller|Weber|Wagner|Hoffmann|Klein|Thill|Schroeder",
       "S.à r.l.|S.A.", "Grand-Rue|Avenue de la Liberté|Boulevard Royal|Rue de Hollerich",
       "B######", "LU########", "lu", True),
    _C("SK", "EUR", "sk", "+421", "Bratislava=811 01|Košice=040 01|Žilina=010 01|Nitra=949 01",
       "Jakub|Sofia|Samuel|Ema|Michal|Natália|Adam|Nina",
       "Horváth|Kováč|Varga|Tóth|Nagy|Baláž|Szabó|Molnár",
       "s.r.o.|a.s.", "Hlavná|Obchodná|Štúrova|Námestie SNP",
       "########", "SK##########", "sk"),
    _C("SI", "EUR", "sl", "+386", "Ljubljana=1000|Maribor=2000|Celje=3000|Kranj=4000",
       "Luka|Zala|Nik|Eva|Jakob|Ema|Mark|Lara",
       "Novak|Horvat|Kovačič|Krajnc|Zupančič|Potočnik|Kovač|Mlakar",
       "d.o.o.|d.d.", "Slovenska cesta|Trubarjeva ulica|Glavni trg|Prešernova ulica",
       "##########", "SI########", "si"),
    _C("EE", "EUR", "et", "+372", "Tallinn=10111|Tartu=51003|Pärnu=80010|Narva=20303",
       "Rasmus|Sofia|Robin|Mia|Oliver|Eliise|Hugo|Lenna",
       "Tamm|Saar|Sepp|Mägi|Kask|Kukk|Rebane|Ilves",
       "OÜ|AS", "Narva mnt|Pärnu mnt|Rüütli tn|Tartu mnt",
       "########", "EE#########", "ee"),
    _C("LV", "EUR", "lv", "+371",
       "Rīga=LV-1050|Daugavpils=LV-5401|Liepāja=LV-3401|Jelgava=LV-3001",
       "Roberts|Sofija|Emīls|Alise|Markuss|Marta|Gustavs|Paula",
       "Bērziņš|Kalniņš|Ozoliņš|Jansons|Liepiņš|Krūmiņš|Balodis|Eglītis",
       "SIA|AS", "Brīvības iela|Elizabetes iela|Krišjāņa Barona iela|Tērbatas iela",
       "4##########", "LV4##########", "lv"),
    _C("LT", "EUR", "lt", "+370", "Vilnius=01100|Kaunas=44280|Klaipėda=91100|Šiauliai=76280",
       "Lukas|Emilija|Matas|Austėja|Jonas|Gabija|Dominykas|Urtė",
       "Kazlauskas|Jankauskas|Petrauskas|Stankevičius|Vasiliauskas|Žukauskas|Butkus|Paulauskas",
       "UAB|AB|MB", "Gedimino pr.|Laisvės al.|Pilies g.|Vokiečių g.",
       "#########", "LT#########", "lt"),
    _C("HR", "EUR", "hr", "+385", "Zagreb=10000|Split=21000|Rijeka=51000|Osijek=31000",
       "Luka|Mia|David|Lucija|Jakov|Ema|Ivan|Sara",
       "Horvat|Kovačević|Babić|Marić|Jurić|Novak|Kovačić|Knežević",
       "d.o.o.|d.d.", "Ilica|Vukovarska ulica|Riva|Korzo",
       "###########", "HR###########", "hr"),
    _C("CY", "EUR", "el", "+357", "Lefkosia=1010|Lemesos=3036|Larnaka=6023|Pafos=8047",
       "Andreas|Maria|Christos|Eleni|Georgios|Anna|Michalis|Sofia",
       "Georgiou|Charalambous|Constantinou|Ioannou|Christodoulou|Nicolaou|Panayiotou|Savva",
       "Ltd", "Makariou Avenue|Ledras Street|Griva Digeni Avenue|Kyprianou Street",
       "HE######", "CY########L", "com.cy"),
    _C("MT", "EUR", "en", "+356",
       "Valletta=VLT 1010|Sliema=SLM 1021|Birkirkara=BKR 1010|Mosta=MST 1010",
       "Luke|Emma|Matthew|Amy|Jake|Julia|Liam|Eliza",
       "Borg|Camilleri|Vella|Farrugia|Zammit|Galea|Micallef|Grech",
       "Ltd|p.l.c.", "Republic Street|Tower Road|Triq il-Kbira|Merchants Street",
       "C #####", "MT########", "com.mt"),
    _C("ME", "EUR", "sr", "+382", "Podgorica=81000|Nikšić=81400|Budva=85310|Bar=85000",
       "Luka|Milica|Stefan|Jovana|Nikola|Ana|Marko|Teodora",
       "Popović|Vujović|Marković|Radulović|Ivanović|Perović|Šćepanović|Vuković",
       "d.o.o.|a.d.", "Njegoševa|Slobode|Hercegovačka|Bulevar Džordža Vašingtona",
       "0########", "", "me"),
    _C("EC", "USD", "es", "+593", "Quito=170150|Guayaquil=090150|Cuenca=010150|Manta=130802",
       "Mateo|Valentina|Santiago|Camila|Sebastián|Isabella|Martín|Emilia",
       "Zambrano|Vera|Mendoza|Cedeño|Andrade|Vargas|Torres|Castro",
       "S.A.|Cía. Ltda.", "Avenida Amazonas|Avenida 9 de Octubre|Calle Larga|Avenida Shyris",
       "##########001", "", "com.ec"),
    _C("PA", "USD", "es", "+507", "Ciudad de Panamá=0801|Colón=0301|David=0401|Santiago=0901",
       "Sebastián|Sofía|Diego|Valeria|Gabriel|Camila|Samuel|Ana",
       "González|Rodríguez|Sánchez|Pérez|Herrera|Castillo|Moreno|Díaz",
       "S.A.|S. de R.L.", "Avenida Balboa|Calle 50|Vía España|Avenida Central",
       "######-1-######", "", "com.pa"),
    _C("SV", "USD", "es", "+503", "San Salvador=1101|Santa Ana=2201|San Miguel=3301|Soyapango=1115",
       "José|María|Carlos|Ana|Luis|Gabriela|Jorge|Daniela",
       "Hernández|López|Martínez|Flores|Ramírez|Rivera|Cruz|Mejía",
       "S.A. de C.V.", "Paseo General Escalón|Boulevard de los Héroes|Avenida Roosevelt|Calle Arce",
       "0614-######-###-#", "", "com.sv"),
    _C("MC", "EUR", "fr", "+377", "Monaco=98000|Monte-Carlo=98000",
       "Louis|Charlotte|Gabriel|Alice|Raphaël|Léa|Pierre|Stéphanie",
       "Pastor|Boisson|Médecin|Notari|Bosio|Gastaud|Marsan|Settimo",
       "SAM|SARL", "Boulevard des Moulins|Avenue de la Costa|Boulevard Albert Ier|Rue Grimaldi",
       "##S#####", "FR###########", "mc", True),
    _C("AD", "EUR", "ca", "+376",
       "Andorra la Vella=AD500|Escaldes-Engordany=AD700|Encamp=AD200|Sant Julià de Lòria=AD600",
       "Marc|Laia|Pol|Júlia|Jordi|Núria|Arnau|Clara",
       "Riba|Cerqueda|Mas|Font|Pujol|Vidal|Serra|Puig",
       "S.L.|S.A.", "Avinguda Meritxell|Carrer Major|Avinguda Carlemany|Carrer de la Unió",
       "L-######-X", "", "ad"),
)
# fmt: on

_INDUSTRIES: Mapping[str, str] = {
    "de": "Consulting|Bau|Logistik|Immobilien|Software|Handel|Design",
    "fr": "Conseil|Immobilier|Transports|Informatique|Distribution|Création",
    "en": "Consulting|Logistics|Properties|Software|Trading|Design",
    "nl": "Advies|Bouw|Logistiek|Vastgoed|Software|Handel",
    "es": "Consultores|Construcciones|Logística|Inmobiliaria|Software|Comercial",
    "ca": "Consultors|Construccions|Logística|Immobiliària|Software|Comercial",
    "it": "Consulenze|Costruzioni|Logistica|Immobiliare|Software|Commerciale",
    "pl": "Doradztwo|Budownictwo|Logistyka|Nieruchomości|Software|Handel",
    "sv": "Konsult|Bygg|Logistik|Fastigheter|Mjukvara|Handel",
    "pt": "Consultoria|Construções|Logística|Imobiliária|Software|Comércio",
    "fi": "Konsultointi|Rakennus|Logistiikka|Kiinteistöt|Ohjelmistot|Kauppa",
    "el": "Symvouleftiki|Kataskeves|Logistiki|Akinita|Logismiko|Emporiki",
    "sk": "Consulting|Stavby|Logistika|Reality|Software|Obchod",
    "sl": "Svetovanje|Gradnje|Logistika|Nepremičnine|Software|Trgovina",
    "et": "Konsult|Ehitus|Logistika|Kinnisvara|Tarkvara|Kaubandus",
    "lv": "Konsultācijas|Būve|Loģistika|Īpašumi|Programmatūra|Tirdzniecība",
    "lt": "Konsultacijos|Statyba|Logistika|Nekilnojamas turtas|Programinė įranga|Prekyba",
    "hr": "Savjetovanje|Gradnja|Logistika|Nekretnine|Softver|Trgovina",
    "sr": "Savjetovanje|Gradnja|Logistika|Nekretnine|Softver|Trgovina",
}

#: Amounts are drawn in EUR and scaled to the invoice currency.
_FX: Mapping[str, Decimal] = {
    "EUR": Decimal(1),
    "USD": Decimal("1.10"),
    "GBP": Decimal("0.86"),
    "PLN": Decimal("4.30"),
    "SEK": Decimal("11.40"),
}
_BIG = ("DE", "FR", "GB", "US")
_MEDIUM = ("NL", "ES", "IT", "PL")
_NOTES = (
    "Hot desk membership, three months unpaid",
    "Private office service charges",
    "Meeting room bookings",
    "Virtual office subscription",
    "Early termination fee per the membership agreement",
)
_CENT = Decimal("0.01")


def _partner(
    pid: str,
    name: str,
    countries: str,
    *,
    phases: str = "amicable legal",
    weight: float = 1.0,
    sla: float = 48,
    max_amount: str | None = None,
) -> PartnerProfile:
    return PartnerProfile(
        partner_id=pid,
        countries=frozenset(countries.split()),
        phases=frozenset(m.Phase(p) for p in phases.split()),
        max_open_cases=10_000,
        sla_hours=sla,
        weight=weight,
        max_amount=Decimal(max_amount) if max_amount else None,
        name=name,
    )


#: The demo's partner network: most of the first 25 countries, not LV, LT, CY, MT, ME;
#: some partners take only amicable cases, so legal cases there stay unassigned too.
# fmt: off
DEMO_PARTNERS: tuple[PartnerProfile, ...] = (
    _partner("demo-rheinlex", "Rheinlex Inkasso Rechtsanwälte", "DE AT LU"),
    _partner("demo-hansa", "Hansa Forderungsmanagement", "DE", phases="amicable",
             weight=0.6, max_amount="10000"),
    _partner("demo-hexagone", "Hexagone Recouvrement", "FR BE LU MC"),
    _partner("demo-albion", "Albion Credit Management", "GB IE"),
    _partner("demo-liberty", "Liberty Commercial Collections", "US", sla=24),
    _partner("demo-polder", "Polder Incasso", "NL BE", phases="amicable"),
    _partner("demo-iberica", "Ibérica Cobros y Abogados", "ES PT AD"),
    _partner("demo-italex", "Italex Recupero Crediti", "IT SI HR"),
    _partner("demo-vistula", "Vistula Windykacja", "PL SK", phases="amicable"),
    _partner("demo-nordic", "Nordic Debt Partners", "SE FI EE"),
    _partner("demo-hellas", "Hellas Legal Recovery", "GR", phases="amicable"),
    _partner("demo-andes", "Andes Cobranzas", "EC PA SV", phases="amicable"),
)
# fmt: on


# --- the sample batch ------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRow:
    """One message of the sample batch and what it is meant to be."""

    #: claim | duplicate | amendment | invalid | withdrawal
    kind: str
    type: str
    body: Mapping[str, Any]

    def jsonl(self) -> bytes:
        return orjson.dumps({"type": self.type, **self.body})


def _digits(rng: random.Random, pattern: str) -> str:
    return "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in pattern)


def _salted(text: str, salt: str) -> str:
    """``text`` with its digits shifted by the digits of ``salt`` (no salt: unchanged)."""
    if not salt:
        return text
    out: list[str] = []
    i = 0
    for ch in text:
        if ch.isdigit():
            out.append(str((int(ch) + int(salt[i % len(salt)])) % 10))
            i += 1
        else:
            out.append(ch)
    return "".join(out)


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", plain.lower())


def _debtor(rng: random.Random, c: Country, salt: str) -> dict[str, Any]:
    city, postal, *region = c.pick(rng, "cities").split("=")
    number = str(rng.randint(1, 180))
    street = c.pick(rng, "streets")
    line1 = f"{number} {street}" if c.number_first else f"{street} {number}"
    address: dict[str, Any] = {
        "line1": line1,
        "city": city,
        "postal_code": _salted(postal, salt),
        "country": c.code,
    }
    if region:
        address["region"] = region[0]
    if rng.random() < 0.15:
        address["line2"] = rng.choice(("Floor 2", "Suite 310", "Unit 4B", "Building C"))
    phone = f"{c.phone} {rng.randint(20, 99)} {rng.randint(100000, 9999999)}"
    last = c.pick(rng, "last_names")
    if rng.random() < 0.7:
        industry = rng.choice(_INDUSTRIES[c.language].split("|"))
        name = f"{last} {industry} {c.pick(rng, 'suffixes')}"
        debtor: dict[str, Any] = {
            "name": name,
            "kind": "company",
            "registration_id": _salted(_digits(rng, c.registration), salt),
        }
        if c.vat:
            debtor["vat_id"] = _salted(_digits(rng, c.vat), salt)
        debtor["country"] = c.code
        debtor["address"] = address
        debtor["email"] = f"accounts@{_ascii(last + industry)}.{c.tld}"
    else:
        first = c.pick(rng, "first_names")
        debtor = {"name": f"{first} {last}", "kind": "person", "country": c.code}
        debtor["address"] = address
        if rng.random() < 0.8:
            debtor["email"] = f"{_ascii(first)}.{_ascii(last)}@mail.{c.tld}"
    debtor["phone"] = phone
    debtor["language"] = c.language
    return debtor


def _amount(rng: random.Random, currency: str, low: float, high: float) -> Decimal:
    eur = math.exp(rng.uniform(math.log(low), math.log(high)))
    return (Decimal(str(eur)) * _FX[currency]).quantize(_CENT)


def _claim(
    rng: random.Random,
    c: Country,
    entity: str,
    debtor: Mapping[str, Any],
    invoice: str,
    creditor_id: str,
    today: dt.date,
) -> dict[str, Any]:
    overdue = rng.randint(20, 420)
    due = today - dt.timedelta(days=overdue)
    invoice_date = due - dt.timedelta(days=rng.choice((14, 30, 30, 45)))
    principal = _amount(rng, c.currency, 150, 18_000)
    if rng.random() < 0.05:
        principal *= 5
    body: dict[str, Any] = {
        "creditor_id": creditor_id,
        "creditor_entity": entity,
        "invoice_number": invoice,
        "invoice_date": invoice_date.isoformat(),
        "due_date": due.isoformat(),
        "currency": c.currency,
        "principal": f"{principal:.2f}",
    }
    if rng.random() < 0.35:
        interest = principal * Decimal("0.115") * overdue / 365
        body["interest"] = f"{interest.quantize(_CENT):.2f}"
    if c.currency == "EUR" and rng.random() < 0.4:
        body["fees"] = "40.00"
    body["debtor"] = dict(debtor)
    if rng.random() < 0.6:
        body["contract_ref"] = f"MSA-{entity}-{rng.randint(1000, 9999)}"
    if rng.random() < 0.1:
        body["notes"] = rng.choice(_NOTES)
    if overdue > 300 and rng.random() < 0.35:
        body["phase"] = "legal"
    return body


def _entities(code: str) -> int:
    return 3 if code in _BIG else 2 if code in _MEDIUM else 1


def generate_sample(
    claims: int = 300,
    countries: int = 25,
    seed: int = 7,
    *,
    today: dt.date,
    tag: str = "",
    creditor_id: str = DEMO_CREDITOR,
) -> list[SampleRow]:
    """A realistic batch of ``claims`` messages over the first ``countries`` countries:
    about 3 % exact re-sends, 3 % amendments (same invoice, another principal), 2 %
    invalid rows (a currency that is no ISO code, a debtor without a country) and a
    couple of withdrawals, each after the claim it refers to."""
    if claims < 1:
        raise ValueError("claims must be at least 1")
    rng = random.Random(seed)
    salt = str(int(hashlib.sha256(tag.encode()).hexdigest()[:12], 16)) if tag else ""
    chosen = COUNTRIES[: max(1, min(countries, len(COUNTRIES)))]
    weights = [4 if c.code in _BIG else 2 if c.code in _MEDIUM else 1 for c in chosen]
    duplicates = round(claims * 0.03)
    amendments = round(claims * 0.03)
    invalid = round(claims * 0.02)
    withdrawals = 2 if claims >= 20 else 0
    base = max(1, claims - duplicates - amendments - invalid - withdrawals)
    specials = claims - base
    duplicates, amendments, invalid, withdrawals = _fit(
        specials, (duplicates, amendments, invalid, withdrawals)
    )

    pools: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    rows: list[SampleRow] = []
    seq = 0

    def invoice_number(code: str) -> str:
        nonlocal seq
        seq += 1
        return f"{code}-{tag}-{seq:05d}" if tag else f"{code}-{seq:06d}"

    for _ in range(base):
        c = rng.choices(chosen, weights)[0]
        pool = pools.setdefault(c.code, [])
        if pool and rng.random() < 0.3:
            entity, debtor = rng.choice(pool)
        else:
            entity = f"FLEX-{c.code}-{rng.randint(1, _entities(c.code)):02d}"
            debtor = _debtor(rng, c, salt)
            pool.append((entity, debtor))
        body = _claim(rng, c, entity, debtor, invoice_number(c.code), creditor_id, today)
        rows.append(SampleRow("claim", m.ClaimPlaced.TYPE, body))

    originals = list(rows)
    picked = rng.sample(originals, min(len(originals), duplicates + amendments + withdrawals))
    follow_ups: list[tuple[SampleRow, SampleRow]] = []
    for row in picked[:duplicates]:
        follow_ups.append((row, SampleRow("duplicate", m.ClaimPlaced.TYPE, dict(row.body))))
    for row in picked[duplicates : duplicates + amendments]:
        body = dict(row.body)
        factor = Decimal(str(rng.choice((0.8, 0.9, 1.1, 1.25))))
        body["principal"] = f"{(Decimal(body['principal']) * factor).quantize(_CENT):.2f}"
        follow_ups.append((row, SampleRow("amendment", m.ClaimAmended.TYPE, body)))
    for row in picked[duplicates + amendments :]:
        body = {
            "creditor_id": row.body["creditor_id"],
            "creditor_entity": row.body["creditor_entity"],
            "invoice_number": row.body["invoice_number"],
            "reason": rng.choice(("paid directly to the creditor", "credit note issued")),
        }
        follow_ups.append((row, SampleRow("withdrawal", m.ClaimWithdrawn.TYPE, body)))
    for i in range(invalid):
        row = rng.choice(originals)
        body = dict(row.body)
        body["invoice_number"] = invoice_number(str(body["debtor"]["country"]))
        if i % 2 == 0:
            body["currency"] = "EUX"
        else:
            debtor = dict(body["debtor"])
            debtor.pop("country")
            debtor["address"] = {k: v for k, v in debtor["address"].items() if k != "country"}
            body["debtor"] = debtor
        follow_ups.append((row, SampleRow("invalid", m.ClaimPlaced.TYPE, body)))
    for original, follow_up in follow_ups:
        after = next(i for i, r in enumerate(rows) if r is original) + 1
        rows.insert(rng.randint(after, len(rows)), follow_up)
    return rows


def _fit(total: int, wanted: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Share ``total`` special rows out in the proportions wanted."""
    out = list(wanted)
    while sum(out) > total:
        out[out.index(max(out))] -= 1
    return out[0], out[1], out[2], out[3]


# --- the simulated partner -----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One report a simulated partner sends, ``delay`` seconds after its previous one."""

    delay: float
    type: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def _money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):.2f}"


def partner_steps(assigned: m.CaseAssigned, *, seed: int, today: dt.date) -> list[Step]:
    """What a partner does with an assigned case: accept (or now and then decline), work
    it (calls, e-mails, letters), often a promise, then payment and closure ``paid``, or
    closure ``uncollectible``. Deterministic for (seed, case, assignment)."""
    rng = random.Random(f"{seed}:{assigned.case_id}:{assigned.assignment_id}")
    total = Decimal(assigned.total)
    currency = assigned.currency

    def wait() -> float:
        return round(rng.uniform(0.3, 1.6), 2)

    if rng.random() < 0.07:
        reason = rng.choice(
            (
                "conflict of interest: the debtor is a client of the firm",
                "no capacity for new cases this month",
                "amount below what we take on for this debtor type",
            )
        )
        fields = {"assignment_id": assigned.assignment_id, "reason": reason}
        return [Step(wait(), m.CaseDeclined.TYPE, fields)]
    steps = [Step(wait(), m.CaseAccepted.TYPE, {"assignment_id": assigned.assignment_id})]
    first = rng.choice(("call", "email", "letter"))
    outcome = rng.choice(("right_party_contact", "left_message")) if first == "call" else "sent"
    steps.append(Step(wait(), m.CaseActivity.TYPE, {"kind": first, "outcome": outcome}))
    path = rng.random()
    if path < 0.6:
        if rng.random() < 0.5:
            steps.append(
                Step(
                    wait(),
                    m.CasePromise.TYPE,
                    {
                        "amount": _money(total),
                        "currency": currency,
                        "due_date": (today + dt.timedelta(days=14)).isoformat(),
                    },
                )
            )
        steps.append(_payment(wait(), total, currency, assigned.case_id, 1))
        steps.append(Step(wait(), m.CaseClosed.TYPE, {"close_code": "paid"}))
    elif path < 0.75:
        half = (total / 2).quantize(_CENT, rounding=ROUND_DOWN)
        rest = total - half
        plan = [
            {"due_date": (today + dt.timedelta(days=14)).isoformat(), "amount": _money(half)},
            {"due_date": (today + dt.timedelta(days=44)).isoformat(), "amount": _money(rest)},
        ]
        steps.append(
            Step(
                wait(),
                m.CasePromise.TYPE,
                {
                    "amount": _money(total),
                    "currency": currency,
                    "due_date": plan[-1]["due_date"],
                    "installments": plan,
                    "note": "payment plan in two instalments",
                },
            )
        )
        steps.append(_payment(wait(), half, currency, assigned.case_id, 1))
        steps.append(_payment(wait(), rest, currency, assigned.case_id, 2))
        steps.append(Step(wait(), m.CaseClosed.TYPE, {"close_code": "paid"}))
    elif path < 0.85:
        steps.append(
            Step(
                wait(),
                m.CaseActivity.TYPE,
                {"kind": "letter", "outcome": "sent", "note": "lawyer's letter before action"},
            )
        )
        steps.append(_payment(wait(), total, currency, assigned.case_id, 1))
        steps.append(Step(wait(), m.CaseClosed.TYPE, {"close_code": "paid"}))
    else:
        for kind in ("call", "call"):
            steps.append(Step(wait(), m.CaseActivity.TYPE, {"kind": kind, "outcome": "no_contact"}))
        steps.append(
            Step(
                wait(),
                m.CaseClosed.TYPE,
                {"close_code": "uncollectible", "note": "debtor unreachable, no assets found"},
            )
        )
    return steps


def _payment(delay: float, amount: Decimal, currency: str, case_id: str, n: int) -> Step:
    return Step(
        delay,
        m.CasePayment.TYPE,
        {"amount": _money(amount), "currency": currency, "reference": f"PAY-{case_id[-8:]}-{n}"},
    )


def build_report(step: Step, case_id: str, now: dt.datetime) -> m.Message:
    """The message of ``step`` on ``case_id``, as it happens ``now``."""
    body = {"case_id": case_id, **step.fields, "occurred_at": now.isoformat()}
    model: m.Message = m.model_for(step.type).model_validate_json(orjson.dumps(body))
    return model


def sample_countries(rows: Sequence[SampleRow]) -> set[str]:
    """Debtor countries of a sample (rows without one left out)."""
    out: set[str] = set()
    for row in rows:
        debtor = row.body.get("debtor")
        if isinstance(debtor, Mapping) and isinstance(debtor.get("country"), str):
            out.add(debtor["country"])
    return out
