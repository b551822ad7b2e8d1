#include <cairo-svg.h>
