"""Webhook mechanics shared by event delivery and the SMS gateway: Standard Webhooks signing,
the rules for where a delivery may go, and one HTTP attempt. No database in here."""
