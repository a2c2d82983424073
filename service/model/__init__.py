"""The model: the catalog of builds (:mod:`.catalog`), fetching and verifying them (:mod:`.fetch`),
what this CPU and GPU can run (:mod:`.cpu`, :mod:`.device`), the engines that run them
(:mod:`.engines`), the one holder a process serves from (:mod:`.holder`), and how many workers,
images at once and threads a host gets (:mod:`.sizing`)."""
