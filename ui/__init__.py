"""vmsim's PySide6 GUI: a view of a vmsim.session.Session (DESIGN.md "GUI")."""
