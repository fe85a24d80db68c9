"""Files copied into Triton model version folders: pure modules and thin Python-backend models.

Modules here import only the standard library, numpy and the serving libraries (never
`builders`), because the Python backend imports them from the version folder.
"""
