"""Mailchimp e-commerce: stores, customers, products and orders.

Two real side effects matter to a sync and are kept: a new e-commerce customer becomes an audience
member (``subscribed`` if ``opt_in_status`` is true, else ``transactional``) but never changes the
status of an existing member; and order lines must name a product/variant that exists.
"""

from __future__ import annotations

from sandbox import store
from sandbox.config import LIST_ID
from sandbox.esp_http import fail, invalid, paging
from sandbox.esp_model import email_valid, subscriber_hash, unique_email_id
from sandbox.timefmt import mc_time, parse_instant
from sandbox.web import Call, Reply

_TIME_FIELDS = ("processed_at_foreign", "updated_at_foreign", "cancelled_at_foreign")
_NUMBER_FIELDS = ("order_total", "tax_total", "discount_total", "shipping_total")


def _store(call: Call) -> dict:
    row = call.db.execute("SELECT doc FROM esp_stores WHERE id = ?", (call.params["store_id"],)).fetchone()
    if row is None:
        raise fail(404)
    return store.loads(row[0])


def _body(call: Call) -> dict:
    data = call.json()
    if not isinstance(data, dict):
        raise invalid([{"field": "body", "message": "Schema describes object"}])
    return data


def _required(data: dict, names: tuple[str, ...], prefix: str = "") -> None:
    missing = [n for n in names if data.get(n) in (None, "")]
    if missing:
        raise invalid([{"field": prefix + n, "message": "This value should not be blank."} for n in missing])


def get_stores(call: Call) -> Reply:
    count, offset = paging(call)
    total = call.db.execute("SELECT COUNT(*) FROM esp_stores").fetchone()[0]
    docs = [
        store.loads(d)
        for (d,) in call.db.execute(
            "SELECT doc FROM esp_stores ORDER BY id LIMIT ? OFFSET ?", (count, offset)
        )
    ]
    return Reply(body={"stores": docs, "total_items": total, "_links": []}, n_returned=len(docs))


def post_store(call: Call) -> Reply:
    data = _body(call)
    _required(data, ("id", "list_id", "name", "currency_code"))
    if data["list_id"] != LIST_ID:
        raise invalid([{"field": "list_id", "message": "The list_id does not exist."}])
    if call.db.execute("SELECT 1 FROM esp_stores WHERE id = ?", (str(data["id"]),)).fetchone():
        raise fail(400, "A store with the provided ID already exists.")
    doc = new_store_doc(str(data["id"]), data["name"], data["currency_code"], call.now_ms) | {
        k: v for k, v in data.items() if k in ("domain", "email_address", "money_format", "platform")
    }
    call.db.execute("INSERT INTO esp_stores VALUES (?, ?)", (doc["id"], store.dumps(doc)))
    return Reply(body=doc, keys=[doc["id"]], n_records=1)


def new_store_doc(store_id: str, name: str, currency: str, now_ms: int) -> dict:
    return {
        "id": store_id,
        "list_id": LIST_ID,
        "name": name,
        "platform": "Shopify",
        "domain": "mailsync-demo.myshopify.com",
        "is_syncing": False,
        "email_address": "shop@example.com",
        "currency_code": currency,
        "money_format": "€",
        "primary_locale": "de",
        "timezone": "Europe/Berlin",
        "list_is_active": True,
        "created_at": mc_time(now_ms),
        "updated_at": mc_time(now_ms),
        "_links": [],
    }


def get_store(call: Call) -> Reply:
    return Reply(body=_store(call), n_returned=1)


# --- customers -----------------------------------------------------------------------------------


def _customer(call: Call, store_id: str, customer_id: str) -> dict | None:
    row = call.db.execute(
        "SELECT doc FROM esp_customers WHERE store_id = ? AND id = ?", (store_id, customer_id)
    ).fetchone()
    return None if row is None else store.loads(row[0])


def _ensure_member(call: Call, email: str, opt_in: bool) -> None:
    """A new customer joins the audience; an existing member's status is never touched."""
    email_hash = subscriber_hash(email)
    if call.db.execute(
        "SELECT 1 FROM esp_members WHERE hash = ? UNION ALL SELECT 1 FROM esp_forgotten WHERE hash = ?",
        (email_hash, email_hash),
    ).fetchone():
        return
    status = "subscribed" if opt_in else "transactional"
    rid = store.next_id(call.db, "esp_members", "rid", 1)
    call.db.execute(
        "INSERT INTO esp_members VALUES (?,?,?,?,?,NULL,'{}','','[]',?,?,?,'E-Commerce',NULL)",
        (
            rid,
            email_hash,
            email.strip(),
            unique_email_id(email_hash),
            status,
            call.now_ms,
            call.now_ms if opt_in else None,
            call.now_ms,
        ),
    )


def _upsert_customer(call: Call, store_id: str, data: dict, prefix: str = "") -> dict:
    customer_id = str(data.get("id", ""))
    _required(data, ("id",), prefix)
    doc = _customer(call, store_id, customer_id)
    if doc is None:
        _required(data, ("email_address",), prefix)
        if not email_valid(str(data["email_address"]).strip()):
            raise invalid(
                [{"field": prefix + "email_address", "message": "Please provide a valid email address."}]
            )
        doc = {
            "id": customer_id,
            "email_address": data["email_address"].strip(),
            "opt_in_status": bool(data.get("opt_in_status", False)),
            "company": "",
            "first_name": "",
            "last_name": "",
            "orders_count": 0,
            "total_spent": 0,
            "address": {},
            "created_at": mc_time(call.now_ms),
        }
        _ensure_member(call, doc["email_address"], doc["opt_in_status"])
    for key in (
        "company",
        "first_name",
        "last_name",
        "orders_count",
        "total_spent",
        "address",
        "opt_in_status",
    ):
        if key in data:
            doc[key] = data[key]
    doc["updated_at"] = mc_time(call.now_ms)
    doc["_links"] = []
    call.db.execute(
        "INSERT OR REPLACE INTO esp_customers VALUES (?, ?, ?)", (store_id, customer_id, store.dumps(doc))
    )
    return doc


def get_customers(call: Call) -> Reply:
    store_id = _store(call)["id"]
    count, offset = paging(call)
    where, args = "store_id = ?", [store_id]
    total = call.db.execute(f"SELECT COUNT(*) FROM esp_customers WHERE {where}", args).fetchone()[0]
    docs = [
        store.loads(d)
        for (d,) in call.db.execute(
            f"SELECT doc FROM esp_customers WHERE {where} ORDER BY rowid LIMIT ? OFFSET ?",
            [*args, count, offset],
        )
    ]
    return Reply(
        body={"store_id": store_id, "customers": docs, "total_items": total, "_links": []},
        n_returned=len(docs),
    )


def get_customer(call: Call) -> Reply:
    doc = _customer(call, _store(call)["id"], call.params["customer_id"])
    if doc is None:
        raise fail(404)
    return Reply(body=doc, n_returned=1)


def put_customer(call: Call) -> Reply:
    store_id = _store(call)["id"]
    data = _body(call)
    data.setdefault("id", call.params["customer_id"])
    if str(data["id"]) != call.params["customer_id"]:
        raise invalid([{"field": "id", "message": "The id must match the customer id in the URL."}])
    if _customer(call, store_id, str(data["id"])) is None:
        _required(data, ("email_address", "opt_in_status"))
    doc = _upsert_customer(call, store_id, data)
    return Reply(body=doc, keys=[doc["id"]], n_records=1)


# --- products ------------------------------------------------------------------------------------


def _product(call: Call, store_id: str, product_id: str) -> dict | None:
    row = call.db.execute(
        "SELECT doc FROM esp_products WHERE store_id = ? AND id = ?", (store_id, product_id)
    ).fetchone()
    return None if row is None else store.loads(row[0])


def _product_doc(data: dict, existing: dict | None) -> dict:
    """Mailchimp's product; on PATCH, variants given are added or updated by id (others stay)."""
    _required(data, ("id", "title", "variants") if existing is None else ())
    variants = data.get("variants", [])
    if not isinstance(variants, list) or not all(
        isinstance(v, dict) and v.get("id") and (v.get("title") or existing) for v in variants
    ):
        raise invalid([{"field": "variants", "message": "Each variant needs an id and a title."}])
    doc = existing or {
        "id": str(data["id"]),
        "currency_code": "EUR",
        "title": "",
        "handle": "",
        "url": "",
        "description": "",
        "type": "",
        "vendor": "",
        "image_url": "",
        "variants": [],
        "published_at_foreign": "",
        "_links": [],
    }
    for key in ("currency_code", "title", "handle", "url", "description", "type", "vendor", "image_url"):
        if key in data:
            doc[key] = data[key]
    by_id = {v["id"]: v for v in doc["variants"]}
    for v in variants:
        old = by_id.get(str(v["id"]), {"url": "", "sku": "", "price": 0, "inventory_quantity": 0})
        by_id[str(v["id"])] = {
            **old,
            **{k: v[k] for k in ("title", "url", "sku", "price", "inventory_quantity") if k in v},
            "id": str(v["id"]),
        }
    doc["variants"] = list(by_id.values())
    return doc


def _save_product(call: Call, store_id: str, doc: dict) -> Reply:
    call.db.execute(
        "INSERT OR REPLACE INTO esp_products VALUES (?, ?, ?)", (store_id, doc["id"], store.dumps(doc))
    )
    return Reply(body=doc, keys=[doc["id"]], n_records=1)


def post_product(call: Call) -> Reply:
    store_id = _store(call)["id"]
    data = _body(call)
    _required(data, ("id",))
    if _product(call, store_id, str(data["id"])) is not None:
        raise fail(400, "A product with the provided ID already exists in the account.")
    return _save_product(call, store_id, _product_doc(data, None))


def patch_product(call: Call) -> Reply:
    store_id = _store(call)["id"]
    existing = _product(call, store_id, call.params["product_id"])
    if existing is None:
        raise fail(404)
    return _save_product(call, store_id, _product_doc(_body(call), existing))


def get_product(call: Call) -> Reply:
    doc = _product(call, _store(call)["id"], call.params["product_id"])
    if doc is None:
        raise fail(404)
    return Reply(body=doc, n_returned=1)


def get_products(call: Call) -> Reply:
    store_id = _store(call)["id"]
    count, offset = paging(call)
    total = call.db.execute("SELECT COUNT(*) FROM esp_products WHERE store_id = ?", (store_id,)).fetchone()[0]
    docs = [
        store.loads(d)
        for (d,) in call.db.execute(
            "SELECT doc FROM esp_products WHERE store_id = ? ORDER BY rowid LIMIT ? OFFSET ?",
            (store_id, count, offset),
        )
    ]
    return Reply(
        body={"store_id": store_id, "products": docs, "total_items": total, "_links": []},
        n_returned=len(docs),
    )


# --- orders --------------------------------------------------------------------------------------


def _check_lines(call: Call, store_id: str, lines: object) -> list[dict]:
    if not isinstance(lines, list) or not lines:
        raise invalid([{"field": "lines", "message": "An order needs at least one line."}])
    clean = []
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        if not isinstance(line, dict):
            raise invalid([{"field": where, "message": "Schema describes object"}])
        _required(line, ("id", "product_id", "product_variant_id", "quantity", "price"), where + ".")
        product = _product(call, store_id, str(line["product_id"]))
        variant = next(
            (v for v in (product or {}).get("variants", []) if v["id"] == str(line["product_variant_id"])),
            None,
        )
        if product is None or variant is None:
            raise fail(
                400,
                "A product with the provided ID does not exist in the account for this list.",
                errors=[
                    {"field": where + ".product_id", "message": "Product or variant not found in this store."}
                ],
            )
        clean.append(
            {
                "id": str(line["id"]),
                "product_id": product["id"],
                "product_title": product["title"],
                "product_variant_id": variant["id"],
                "product_variant_title": variant["title"],
                "image_url": "",
                "quantity": line["quantity"],
                "price": line["price"],
                "discount": line.get("discount", 0),
                "_links": [],
            }
        )
    return clean


def _order_doc(call: Call, store_id: str, data: dict, doc: dict) -> dict:
    """Merge ``data`` into ``doc`` with Mailchimp's validation; returns the stored order."""
    for name in _NUMBER_FIELDS:
        if name in data and (isinstance(data[name], bool) or not isinstance(data[name], int | float)):
            raise invalid([{"field": name, "message": "Schema describes number"}])
    for name in _TIME_FIELDS:
        if data.get(name):
            try:
                data[name] = mc_time(parse_instant(data[name]))
            except ValueError:
                raise invalid([{"field": name, "message": "Please enter a valid ISO 8601 date"}]) from None
    if "lines" in data:
        data["lines"] = _check_lines(call, store_id, data["lines"])
    if "customer" in data:
        if not isinstance(data["customer"], dict):
            raise invalid([{"field": "customer", "message": "Schema describes object"}])
        data["customer"] = _upsert_customer(call, store_id, data["customer"], "customer.")
    for key in (
        "id",
        "customer",
        "campaign_id",
        "landing_site",
        "financial_status",
        "fulfillment_status",
        "currency_code",
        "order_url",
        "tracking_code",
        "lines",
        "promos",
        *_NUMBER_FIELDS,
        *_TIME_FIELDS,
    ):
        if key in data:
            doc[key] = data[key]
    doc["store_id"] = store_id
    doc["_links"] = []
    return doc


def _load_order(call: Call) -> tuple[str, dict]:
    store_id = _store(call)["id"]
    row = call.db.execute(
        "SELECT doc FROM esp_orders WHERE store_id = ? AND id = ?", (store_id, call.params["order_id"])
    ).fetchone()
    if row is None:
        raise fail(404)
    return store_id, store.loads(row[0])


def post_order(call: Call) -> Reply:
    store_id = _store(call)["id"]
    data = _body(call)
    _required(data, ("id", "customer", "currency_code", "order_total", "lines"))
    order_id = str(data["id"])
    data["id"] = order_id
    if call.db.execute(
        "SELECT 1 FROM esp_orders WHERE store_id = ? AND id = ?", (store_id, order_id)
    ).fetchone():
        raise fail(400, f"An order with id {order_id} already exists in this store; use PATCH to update it.")
    doc = _order_doc(
        call,
        store_id,
        data,
        {
            "campaign_id": "",
            "landing_site": "",
            "financial_status": "",
            "fulfillment_status": "",
            "tax_total": 0,
            "discount_total": 0,
            "shipping_total": 0,
            "processed_at_foreign": "",
            "updated_at_foreign": "",
            "cancelled_at_foreign": "",
        },
    )
    call.db.execute(
        "INSERT INTO esp_orders VALUES (NULL, ?, ?, ?, ?)",
        (store_id, order_id, doc.get("campaign_id") or None, store.dumps(doc)),
    )
    return Reply(body=doc, keys=[order_id], n_records=1)


def patch_order(call: Call) -> Reply:
    store_id, doc = _load_order(call)
    data = _body(call)
    data.pop("id", None)
    doc = _order_doc(call, store_id, data, doc)
    call.db.execute(
        "UPDATE esp_orders SET campaign_id = ?, doc = ? WHERE store_id = ? AND id = ?",
        (doc.get("campaign_id") or None, store.dumps(doc), store_id, doc["id"]),
    )
    return Reply(body=doc, keys=[doc["id"]], n_records=1)


def get_order(call: Call) -> Reply:
    return Reply(body=_load_order(call)[1], n_returned=1)


def delete_order(call: Call) -> Reply:
    store_id, doc = _load_order(call)
    call.db.execute("DELETE FROM esp_orders WHERE store_id = ? AND id = ?", (store_id, doc["id"]))
    return Reply(204, keys=[doc["id"]], n_records=1)


def get_orders(call: Call) -> Reply:
    store_id = _store(call)["id"]
    count, offset = paging(call)
    where, args = "store_id = ?", [store_id]
    if call.query.get("campaign_id"):
        where += " AND campaign_id = ?"
        args.append(call.query["campaign_id"])
    total = call.db.execute(f"SELECT COUNT(*) FROM esp_orders WHERE {where}", args).fetchone()[0]
    docs = [
        store.loads(d)
        for (d,) in call.db.execute(
            f"SELECT doc FROM esp_orders WHERE {where} ORDER BY rid LIMIT ? OFFSET ?", [*args, count, offset]
        )
    ]
    return Reply(
        body={"store_id": store_id, "orders": docs, "total_items": total, "_links": []}, n_returned=len(docs)
    )


_BASE = "/3.0/ecommerce/stores/{store_id}"
ROUTES = [
    ("/3.0/ecommerce/stores", ["GET"], get_stores),
    ("/3.0/ecommerce/stores", ["POST"], post_store),
    (_BASE, ["GET"], get_store),
    (_BASE + "/customers", ["GET"], get_customers),
    (_BASE + "/customers/{customer_id}", ["GET"], get_customer),
    (_BASE + "/customers/{customer_id}", ["PUT"], put_customer),
    (_BASE + "/products", ["GET"], get_products),
    (_BASE + "/products/{product_id}", ["GET"], get_product),
    (_BASE + "/products", ["POST"], post_product),
    (_BASE + "/products/{product_id}", ["PATCH"], patch_product),
    (_BASE + "/orders", ["GET"], get_orders),
    (_BASE + "/orders", ["POST"], post_order),
    (_BASE + "/orders/{order_id}", ["GET"], get_order),
    (_BASE + "/orders/{order_id}", ["PATCH"], patch_order),
    (_BASE + "/orders/{order_id}", ["DELETE"], delete_order),
]
