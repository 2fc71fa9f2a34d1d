"""Agent Teams: the topology a team is built from, its validation, and team CRUD."""
