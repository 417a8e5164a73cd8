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
   "lyaml",
   "luafilesystem",
}
-- Declared by library only: Debian keeps curl/curl.h in a multiarch folder
-- that luarocks' header search does not look in.
external_dependencies = {
   CURL = { library = "curl" },
   PCRE2 = { library = "pcre2-8" },
   XXHASH = { library = "xxhash" },
   SNAPPY = { library = "snappy" },
}
build = {
   type = "builtin",
   modules = {
      ["promscrape.core"] = {
         sources = {
            "src/ps_appender_batch.c",
            "src/ps_appender_fanout.c",
            "src/ps_appender_mem.c",
            "src/ps_bg.c",
            "src/ps_buf.c",
            "src/ps_cache.c",
            "src/ps_core.c",
            "src/ps_engine.c",
            "src/ps_hmap.c",
            "src/ps_http.c",
            "src/ps_httpd.c",
            "src/ps_labels.c",
            "src/ps_loop.c",
            "src/ps_manager.c",
            "src/ps_md5.c",
            "src/ps_parse.c",
            "src/ps_pb.c",
            "src/ps_pool.c",
            "src/ps_relabel.c",
            "src/ps_remote_write.c",
            "src/ps_signal.c",
            "src/ps_target.c",
            "src/ps_timer.c",
            "src/lua/lps_bg.c",
            "src/lua/lps_core.c",
            "src/lua/lps_manager.c",
            "src/lua/lps_parse.c",
            "src/lua/lps_relabel.c",
            "src/lua/lps_remote_write.c",
            "src/lua/lps_store.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "src", "src/lua" },
         libraries = { "pcre2-8", "curl", "xxhash", "snappy", "m", "pthread" },
         libdirs = { "$(CURL_LIBDIR)", "$(PCRE2_LIBDIR)", "$(XXHASH_LIBDIR)", "$(SNAPPY_LIBDIR)" },
      },
      ["promscrape.cli.check"] = "lua/promscrape/cli/check.lua",
      ["promscrape.cli.relabel"] = "lua/promscrape/cli/relabel.lua",
      ["promscrape.cli.run"] = "lua/promscrape/cli/run.lua",
      ["promscrape.cli.scrape"] = "lua/promscrape/cli/scrape.lua",
      ["promscrape.cli.util"] = "lua/promscrape/cli/util.lua",
      ["promscrape.config"] = "lua/promscrape/config.lua",
      ["promscrape.config.fs"] = "lua/promscrape/config/fs.lua",
      ["promscrape.config.values"] = "lua/promscrape/config/values.lua",
      ["promscrape.config.yaml"] = "lua/promscrape/config/yaml.lua",
      ["promscrape.discovery"] = "lua/promscrape/discovery.lua",
      ["promscrape.discovery.file"] = "lua/promscrape/discovery/file.lua",
      ["promscrape.discovery.http"] = "lua/promscrape/discovery/http.lua",
      ["promscrape.discovery.static"] = "lua/promscrape/discovery/static.lua",
      ["promscrape"] = "lua/promscrape/init.lua",
      ["promscrape.manager"] = "lua/promscrape/manager.lua",
      ["promscrape.relabel"] = "lua/promscrape/relabel.lua",
      ["promscrape.remote_write"] = "lua/promscrape/remote_write.lua",
      ["resty.promscrape"] = "lua/resty/promscrape.lua",
   },
   install = {
      bin = { promscrape = "bin/promscrape" },
   },
}
