/* handle_share.c - the registry hooks that let Channel, MemChannel and
 * Queue handles cross interpreters.  A handle's record holds a reference
 * to the channel (neutral: it belongs to no interpreter) and rebuilds as
 * a handle of the receiving interpreter's own class, so a channel lives
 * while any handle or record holds it.  channel.c registers the types
 * with these hooks.
 */
#include "channel.h"

static int
handle_share(PyObject *obj, TpShare_Data *data)
{
    tps_channel *ch = ((tps_handle *)obj)->ch;
    tps_channel_incref(ch);
    data->ptr = ch;
    return 0;
}

static PyObject *
handle_rebuild(PyTypeObject *type, const TpShare_Data *data)
{
    tps_channel *ch = data->ptr;
    tps_channel_incref(ch);
    return tps_handle_wrap(type, ch);
}

static void
handle_free(TpShare_Data *data)
{
    tps_channel_decref(data->ptr);
}

const TpShare_Hooks tps_channel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Channel",
    handle_share, handle_rebuild, handle_free,
};

const TpShare_Hooks tps_memchannel_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.MemChannel",
    handle_share, handle_rebuild, handle_free,
};

const TpShare_Hooks tps_queue_hooks = {
    TPSHARE_HOOKS_INIT, 0, "tpshare.Queue",
    handle_share, handle_rebuild, handle_free,
};
