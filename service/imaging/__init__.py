"""Pixels: decoding uploads (:mod:`.decode`), the network's input and output (:mod:`.network`), the
subject's geometry (:mod:`.geometry`), compositing and encoding (:mod:`.compose`), and the steps
after the mask: the foreground estimate and refinement (:mod:`.matting`), effects (:mod:`.effects`),
the mask's confidence (:mod:`.confidence`)."""
