"""pelk_mm's C++ source and what builds it (:mod:`.build`)."""
