"""Other tools' ways in and out of a store: :mod:`.mmaction2` (transforms that read a store from
an mmaction2 config) and :mod:`.webdataset` (tar shards of whole videos). Each imports its tool
only when used."""
