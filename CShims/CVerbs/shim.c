#include "cverbs.h"
