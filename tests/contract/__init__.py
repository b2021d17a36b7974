"""One contract for every HappyHorse route, run through the local stack against the route's
simulator. Routes are listed in tests/contract/routes.py (`ROUTES`): a new route gets the
whole suite by adding its line there."""
