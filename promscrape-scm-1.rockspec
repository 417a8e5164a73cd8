rockspec_format = "3.0"
package = "promscrape"
version = "scm-1"
source = {
   url = "git+file://.",
}
description = {
   summary = "The Prometheus scrape subsystem as a C library with Lua bindings",
   detailed = [[
Exposition parser (Prometheus text 0.0.4 and OpenMetrics 1.0), relabel
engine, and (later) scrape loops, pools and a manager, with Prometheus's
semantics. Loads in Lua 5.4 and LuaJIT (OpenResty).
]],
   license = "Apache-2.0",
}
dependencies = {
   "lua >= 5.1",
}
-- Declared by library only: Debian keeps curl/curl.h in a multiarch folder
-- that luarocks' header search does not look in.
external_dependencies = {
   CURL = { library = "curl" },
   PCRE2 = { library = "pcre2-8" },
}
build = {
   type = "builtin",
   modules = {
      ["promscrape.core"] = {
         sources = {
            "src/ps_core.c",
            "src/ps_parse.c",
            "src/lua/lps_core.c",
            "src/lua/lps_parse.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "src", "src/lua" },
         libraries = { "pcre2-8", "curl", "m" },
         libdirs = { "$(CURL_LIBDIR)", "$(PCRE2_LIBDIR)" },
      },
      ["promscrape"] = "lua/promscrape/init.lua",
   },
   install = {
      bin = { promscrape = "bin/promscrape" },
   },
}
