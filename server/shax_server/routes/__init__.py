"""Routers, one per resource: programs (native API), oip (Open Inference Protocol), ops."""
