/* The public header as a module, so that the Swift implementation (Sources/GedsC) uses its types and codes. */
#include "geds.h"
