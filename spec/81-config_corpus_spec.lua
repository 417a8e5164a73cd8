-- The config fuzzer's checked-in corpus (spec/fuzz/corpus/config: seeds and
-- the minimized findings of spec/fuzz/fuzz_config.lua), replayed with the
-- fuzzer's own property: config.parse returns a config, which a fresh
-- manager then accepts, or `nil, err` with a non-empty string; nothing
-- raises. Each file is one test, so a regression names its input.

local lfs = require("lfs")

local DIR = "spec/fuzz/corpus/config"

local lib = assert(loadfile("spec/fuzz/fuzz_config.lua"))("--lib")
lib.include_dir()

local names = {}
for name in lfs.dir(DIR) do
  if name:sub(1, 1) ~= "." then names[#names + 1] = name end
end
table.sort(names)

describe("config fuzz corpus", function()
  it("is there", function()
    assert.is_true(#names > 0, DIR .. " is empty")
  end)
  for _, name in ipairs(names) do
    it(name, function()
      local f = assert(io.open(DIR .. "/" .. name, "rb"))
      local text = f:read("*a")
      f:close()
      local kind, msg = lib.check(text)
      assert(kind == nil, tostring(kind) .. ": " .. tostring(msg))
    end)
  end
end)
