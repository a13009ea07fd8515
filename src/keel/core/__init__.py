"""Pure domain: types, errors, ids, pricing, token estimates. No I/O, no clock."""
