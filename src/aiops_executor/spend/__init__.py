"""Spend under control: budgets per team, API key, provider or everything, and the ledger of model calls behind
them and behind usage reports."""
