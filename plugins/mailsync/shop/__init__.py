"""The shop conversions integration (Shopify orders -> ESP e-commerce, buyer totals, revenue),
split by concern: `orders` (flattening, the orders snapshot, the ESP orders), `attribution`
(mc_cid, utm_campaign, last click), `currency` (net amounts, EUR rates), `buyers` (buyer totals),
`products`, `revenue` (the revenue table and page), `ecommerce` (loading products and orders into
the ESP store) and `segments` (the buyers-over-N tag). Plain functions over a `Run` and explicit
arguments (hooks, state and mapping names): the operators in `mailsync.operators.shop` and
`mailsync.operators.segments` wire them to connection ids and brands.
"""
