-- sao.gm — General MIDI 1 names: programs, families, coarse instrument classes, drum kits and
-- percussion keys, and human-readable aliases for prompts and metadata.
--
--   gm.name(33)            --> "Electric Bass (finger)"   (pretty_midi's spelling, GM 1)
--   gm.alias(33)           --> "Fingered Electric Bass"   (how a person would say it)
--   gm.family(33)          --> "Bass"                     (the 16 GM families of 8 programs)
--   gm.class(33)           --> "bass"                     (coarse class: piano, keys, organ, ...)
--   gm.name(0, true)       --> "Drums"; gm.drum_kit(25) --> "TR-808 Kit"; gm.drum_note(38) --> "Acoustic Snare"
--   gm.program("fingered electric bass") --> 33  (either spelling, any case)
-- Program numbers are 0-based (0..127) as in MIDI files and pretty_midi.
local M = {}

-- The 128 GM 1 program names, spelled as pretty_midi spells them.
M.programs = {
  [0] = "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
  "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
  "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells", "Dulcimer",
  "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
  "Tango Accordion",
  "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
  "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics",
  "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass", "Slap Bass 1",
  "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
  "Violin", "Viola", "Cello", "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
  "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2", "Choir Aahs", "Voice Oohs",
  "Synth Choir", "Orchestra Hit",
  "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2",
  "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon", "Clarinet",
  "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown bottle", "Shakuhachi", "Whistle", "Ocarina",
  "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 chiff", "Lead 5 (charang)",
  "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
  "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)",
  "Pad 7 (halo)", "Pad 8 (sweep)",
  "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)", "FX 5 (brightness)",
  "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
  "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai",
  "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal",
  "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring", "Helicopter", "Applause",
  "Gunshot",
}

-- How a person would name each program in a prompt ("Electric Bass (finger)" -> "Fingered Electric Bass").
M.aliases = {
  [0] = "Grand Piano", "Bright Piano", "Electric Grand Piano", "Honky-Tonk Piano",
  "Rhodes Electric Piano", "FM Electric Piano", "Harpsichord", "Clavinet",
  "Celesta", "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells",
  "Hammered Dulcimer",
  "Hammond Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ", "Accordion", "Harmonica",
  "Bandoneon",
  "Nylon String Acoustic Guitar", "Steel String Acoustic Guitar", "Jazz Electric Guitar",
  "Clean Electric Guitar", "Muted Electric Guitar", "Overdriven Electric Guitar", "Distorted Electric Guitar",
  "Guitar Harmonics",
  "Upright Bass", "Fingered Electric Bass", "Picked Electric Bass", "Fretless Electric Bass", "Slap Bass",
  "Popped Slap Bass", "Synth Bass", "Warm Synth Bass",
  "Violin", "Viola", "Cello", "Double Bass", "Tremolo Strings", "Pizzicato Strings", "Harp", "Timpani",
  "String Ensemble", "Slow String Ensemble", "Synth Strings", "Warm Synth Strings", "Choir", "Vocal Oohs",
  "Synth Choir", "Orchestra Hit",
  "Trumpet", "Trombone", "Tuba", "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass",
  "Warm Synth Brass",
  "Soprano Saxophone", "Alto Saxophone", "Tenor Saxophone", "Baritone Saxophone", "Oboe", "English Horn",
  "Bassoon", "Clarinet",
  "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
  "Square Lead Synth", "Sawtooth Lead Synth", "Calliope Lead Synth", "Chiff Lead Synth",
  "Distorted Lead Synth", "Vocal Lead Synth", "Fifths Lead Synth", "Bass and Lead Synth",
  "New Age Synth Pad", "Warm Synth Pad", "Polysynth Pad", "Choir Synth Pad", "Bowed Synth Pad",
  "Metallic Synth Pad", "Halo Synth Pad", "Sweeping Synth Pad",
  "Rain Synth Effect", "Soundtrack Synth Effect", "Crystal Synth Effect", "Atmosphere Synth Effect",
  "Bright Synth Effect", "Goblins Synth Effect", "Echoes Synth Effect", "Sci-Fi Synth Effect",
  "Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipes", "Fiddle", "Shehnai",
  "Tinkle Bell", "Agogo Bells", "Steel Drums", "Woodblock", "Taiko Drums", "Melodic Toms", "Synth Drums",
  "Reverse Cymbal",
  "Guitar Fret Noise", "Breath Noise", "Seashore Sounds", "Bird Tweets", "Telephone Ring", "Helicopter",
  "Applause", "Gunshot",
}

-- The 16 GM families, 8 programs each.
M.families = {
  [0] = "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
  "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
}

-- Coarse, lower-case classes (what a dataset filter or a prompt wants), per program.
local CLASS_RANGES = {
  { 0, 3, "piano" }, { 4, 5, "keys" }, { 6, 7, "keys" }, { 8, 15, "mallets" }, { 16, 20, "organ" },
  { 21, 23, "accordion" }, { 24, 31, "guitar" }, { 32, 39, "bass" }, { 40, 45, "strings" }, { 46, 46, "harp" },
  { 47, 47, "percussion" }, { 48, 51, "strings" }, { 52, 54, "voice" }, { 55, 55, "strings" }, { 56, 63, "brass" },
  { 64, 71, "woodwind" }, { 72, 79, "woodwind" }, { 80, 87, "synth" }, { 88, 95, "pad" }, { 96, 103, "fx" },
  { 104, 108, "plucked" }, { 109, 111, "woodwind" }, { 112, 119, "percussion" }, { 120, 127, "fx" },
}
M.classes = {}
for _, r in ipairs(CLASS_RANGES) do for p = r[1], r[2] do M.classes[p] = r[3] end end
M.classes[22] = "woodwind"   -- harmonica
M.classes[110] = "strings"   -- fiddle

-- GS/GM2 drum kits by program on the percussion channel (others fall back to the kit below them).
M.drum_kits = {
  [0] = "Standard Kit", [8] = "Room Kit", [16] = "Power Kit", [24] = "Electronic Kit", [25] = "TR-808 Kit",
  [32] = "Jazz Kit", [40] = "Brush Kit", [48] = "Orchestra Kit", [56] = "Sound FX Kit",
}

-- GM 1 percussion key map (channel 10), keys 35..81.
M.drum_notes = {}
for i, name in ipairs {
  "Acoustic Bass Drum", "Bass Drum 1", "Side Stick", "Acoustic Snare", "Hand Clap", "Electric Snare",
  "Low Floor Tom", "Closed Hi Hat", "High Floor Tom", "Pedal Hi Hat", "Low Tom", "Open Hi Hat", "Low-Mid Tom",
  "Hi-Mid Tom", "Crash Cymbal 1", "High Tom", "Ride Cymbal 1", "Chinese Cymbal", "Ride Bell", "Tambourine",
  "Splash Cymbal", "Cowbell", "Crash Cymbal 2", "Vibraslap", "Ride Cymbal 2", "Hi Bongo", "Low Bongo",
  "Mute Hi Conga", "Open Hi Conga", "Low Conga", "High Timbale", "Low Timbale", "High Agogo", "Low Agogo",
  "Cabasa", "Maracas", "Short Whistle", "Long Whistle", "Short Guiro", "Long Guiro", "Claves", "Hi Wood Block",
  "Low Wood Block", "Mute Cuica", "Open Cuica", "Mute Triangle", "Open Triangle",
} do M.drum_notes[34 + i] = name end

M.DRUMS = "Drums"

local function check_program(p, fn)
  if type(p) ~= "number" or p < 0 or p > 127 or p % 1 ~= 0 then
    error("sao.gm." .. fn .. ": program must be an integer 0..127, got " .. tostring(p), 3)
  end
end

--- GM name of a program (pretty_midi spelling); "Drums" for a drum instrument.
function M.name(program, is_drum)
  if is_drum then return M.DRUMS end
  check_program(program, "name")
  return M.programs[program]
end

--- Human name of a program ("Fingered Electric Bass"); "Drums" for a drum instrument.
function M.alias(program, is_drum)
  if is_drum then return M.DRUMS end
  check_program(program, "alias")
  return M.aliases[program]
end

--- GM family ("Bass"); "Drums" for a drum instrument.
function M.family(program, is_drum)
  if is_drum then return M.DRUMS end
  check_program(program, "family")
  return M.families[math.floor(program / 8)]
end

--- Coarse class ("bass", "strings", ...); "drums" for a drum instrument.
function M.class(program, is_drum)
  if is_drum then return "drums" end
  check_program(program, "class")
  return M.classes[program]
end

--- Drum kit name for a program on the percussion channel.
function M.drum_kit(program)
  check_program(program, "drum_kit")
  for p = program, 0, -1 do if M.drum_kits[p] then return M.drum_kits[p] end end
end

--- GM percussion name of a key (35..81), nil outside the map.
function M.drum_note(key) return M.drum_notes[key] end

local lookup
--- Program number of a name in either spelling (case and spacing ignored); nil when unknown.
function M.program(name)
  if not lookup then
    lookup = {}
    local function norm(s) return (s:lower():gsub("[^%w]", "")) end
    for p = 0, 127 do
      lookup[norm(M.programs[p])] = p
      lookup[norm(M.aliases[p])] = lookup[norm(M.aliases[p])] or p
    end
    M._norm = norm
  end
  return lookup[M._norm(tostring(name))]
end

return M
