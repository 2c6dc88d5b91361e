// SwiftPM needs one C file per C target; everything CCurl offers is static inline in include/ccurl.h.
#include "ccurl.h"
