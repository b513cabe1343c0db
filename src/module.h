/* module.h - what module.c and functions.c share: the table of the
 * module's functions, defined in functions.c and used by module.c's
 * module definition.
 */
#ifndef TPSHARE_MODULE_H
#define TPSHARE_MODULE_H

#ifndef TPSHARE_BUILD_CORE
#error "module.h is internal to tpshare; include tpshare.h instead"
#endif

#include "tpshare_internal.h"

/* The state of tpshare._tpshare `module` (borrowed). */
static inline tps_module_state *
tps_module_state_of(PyObject *module)
{
    return (tps_module_state *)PyModule_GetState(module);
}

/* The functions of tpshare._tpshare (functions.c). */
extern PyMethodDef tps_module_methods[];

#endif /* TPSHARE_MODULE_H */
