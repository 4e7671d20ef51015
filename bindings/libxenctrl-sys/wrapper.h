/*
 * What perfplus uses of the Xen 4.17 tool-stack libraries, for bindgen.
 * The quirks of these headers are handled here, once:
 */

/* xenctrl.h first: xenguest.h has no #includes of its own and needs
 * xenctrl.h's types (xc_interface, xen_pfn_t, uint64_t). xenctrl.h also
 * defines __XEN_TOOLS__, without which xen/domctl.h refuses to compile. */
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>
#include <xen/hvm/params.h>

/* Exported by libxenctrl.so.4.17 but declared only in the private
 * xc_private.h: works in place, gfns in, XEN_DOMCTL_PFINFO_* types out.
 * (tools/libs/ctrl/xc_private.c, RELEASE-4.17.7) */
int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom,
                          unsigned int num, xen_pfn_t *arr);
