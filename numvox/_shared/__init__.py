"""Machinery shared by every numvox operation: array kinds and conversion (:mod:`.arrays`),
backend choice (:mod:`.backend`), argument checks (:mod:`.validate`) and half-precision
decoding for kernels (:mod:`.halfprec`)."""
