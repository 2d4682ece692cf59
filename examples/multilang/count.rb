# The seed's counting node in Ruby: for each message, its "count" numbers as "n".
#
# A child of a ShellNode (see graph.py). It reads one message a line from stdin
# and writes each number from 0 up to "count" as a line of JSON. When
# EMIT_SHELL_MODE is "persistent" (ShellNode sets it for the child) it ends each
# message's outputs with an empty line and flushes, as the persistent mode asks.
# By hand:
#
#     echo '{"count": 3}' | ruby examples/multilang/count.rb
require "json"

persistent = ENV["EMIT_SHELL_MODE"] == "persistent"

STDIN.each_line do |line|
  message = JSON.parse(line)
  message["count"].times do |i|
    puts i.to_json
  end
  if persistent
    puts
    STDOUT.flush
  end
end
