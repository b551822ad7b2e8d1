#include <oneapi/dnnl/dnnl.h>
// Debian's oneDNN runs its threads on libgomp, whose omp.h sits in gcc's private include
// directory; the one call svite needs (a thread count per calling thread) is declared here.
void omp_set_num_threads(int);
