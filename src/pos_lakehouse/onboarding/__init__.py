"""`pos-lakehouse onboard`: a retailer YAML proposed from a folder of sample files.

`sniff` (format, encoding, separator, JSON shape: pure functions of a file's first bytes),
`values` (what a column's values look like: numbers, decimal commas, dates, GS1 codes),
`vocabulary` (what a column's name means, in the languages retailers write headers in),
`grain` (file kinds, cadence, weeks and snapshots from names and dates), `mapping` (columns to
the canonical model by name and content), `render` (the commented YAML) are pure;
`profile` reads the files and puts them together.
"""
