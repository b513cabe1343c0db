/* handlers_builtin.c - the list of tpshare's built-in handlers.
 *
 * Each registry/handlers_*.c file registers its types through the same
 * entry point a third-party type uses (TpShare_CAPI.Register, see
 * handlers.h); the registry makes the registrations found here immortal
 * once they are in (records then skip counting references to them).
 * This file names them all in the
 * one function the module's set-up gives the registry
 * (tps_registry_init_with()), so that the registry itself knows no
 * handler.
 */
#include "registry.h"

int
tps_builtin_handlers_register(void)
{
    if (tps_handlers_scalar_init() < 0 || tps_handlers_text_init() < 0
        || tps_handlers_tuple_init() < 0 || tps_handlers_export_init() < 0)
    {
        return -1;
    }
    return 0;
}
