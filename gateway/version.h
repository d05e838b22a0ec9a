/* version: the gateway's version, in logs, --version and gateway_build_info. */
#ifndef GW_VERSION_H
#define GW_VERSION_H

#ifndef GW_VERSION
#define GW_VERSION "0.1.0"
#endif

#endif
