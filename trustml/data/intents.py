"""Intent templates and slot values of the synthetic smart-speaker corpus.

Each intent has several paraphrase templates; ``{slot}`` marks a slot filled from ``SLOT_VALUES``.
The ``DIALECT_VARIANTS`` table rewrites words for speakers of the minority dialect, so that a model
trained mostly on the majority dialect is measurably worse on the minority one (a planted,
known source of group unfairness).
"""

INTENT_TEMPLATES: dict[str, list[str]] = {
    "play_music": [
        "play {song} by {artist}", "play some {genre} music", "i want to hear {song}",
        "can you play {artist}", "put {genre} music on in the {room}", "start playing {song}",
    ],
    "pause_music": [
        "pause the music", "stop the song", "pause playback please", "hold the music for a second",
        "stop playing music in the {room}",
    ],
    "volume_up": [
        "turn the volume up", "make it louder", "increase the volume in the {room}", "volume up please",
        "louder please",
    ],
    "volume_down": [
        "turn the volume down", "make it quieter", "decrease the volume in the {room}",
        "volume down please", "too loud turn it down",
    ],
    "weather_query": [
        "what is the weather in {city}", "will it rain in {city} {date}", "how hot is it in {city}",
        "what is the weather like {date}", "do i need an umbrella {date}", "weather forecast for {city}",
    ],
    "set_alarm": [
        "set an alarm for {time}", "wake me up at {time}", "alarm at {time} {date}",
        "please set an alarm for {time}", "i need to wake up at {time}",
    ],
    "cancel_alarm": [
        "cancel my alarm for {time}", "remove the alarm", "delete the {time} alarm",
        "turn off my alarm", "i do not need the alarm {date}",
    ],
    "set_timer": [
        "set a timer for {duration}", "start a {duration} timer", "timer for {duration} please",
        "count down {duration}", "remind me in {duration}",
    ],
    "lights_on": [
        "turn on the lights in the {room}", "switch the {room} lights on", "lights on please",
        "make the {room} bright", "turn the lamp on in the {room}",
    ],
    "lights_off": [
        "turn off the lights in the {room}", "switch the {room} lights off", "lights off please",
        "make the {room} dark", "turn the lamp off in the {room}",
    ],
    "set_thermostat": [
        "set the temperature to {degrees} degrees", "make the {room} warmer", "heat the house to {degrees}",
        "set the thermostat to {degrees}", "it is cold in the {room}",
    ],
    "add_to_list": [
        "add {item} to my shopping list", "put {item} on the list", "i need to buy {item}",
        "remember to get {item}", "add {item} to the grocery list",
    ],
    "order_item": [
        "order {item} for me", "buy {item} online", "i want to order more {item}",
        "reorder {item}", "can you purchase {item}",
    ],
    "calendar_query": [
        "what is on my calendar {date}", "do i have meetings {date}", "when is my next appointment",
        "show my schedule for {date}", "am i free at {time} {date}",
    ],
    "calendar_add": [
        "add a meeting with {contact} {date} at {time}", "schedule lunch with {contact} {date}",
        "put a dentist appointment on {date}", "create an event at {time} {date}",
        "book time with {contact} {date}",
    ],
    "call_contact": [
        "call {contact}", "phone {contact} please", "ring {contact}", "start a call with {contact}",
        "dial {contact} on speaker",
    ],
    "send_message": [
        "text {contact} that i am running late", "send a message to {contact}", "tell {contact} i am on my way",
        "message {contact} about dinner", "send {contact} a text",
    ],
    "news_query": [
        "what is the news {date}", "read me the headlines", "any {topic} news", "tell me the latest {topic} news",
        "what happened in {city} {date}",
    ],
    "sports_score": [
        "what was the score of the {team} game", "did the {team} win", "how are the {team} doing",
        "when do the {team} play next", "give me the {team} score",
    ],
    "traffic_query": [
        "how is the traffic to {city}", "how long to drive to {city}", "is there traffic on the way to work",
        "what is my commute like", "best route to {city}",
    ],
    "recipe_query": [
        "how do i make {dish}", "find a recipe for {dish}", "what can i cook with {item}",
        "give me a {dish} recipe", "how long do i bake {dish}",
    ],
    "translate": [
        "how do you say {phrase} in {language}", "translate {phrase} to {language}",
        "what is {phrase} in {language}", "say {phrase} in {language}",
    ],
    "joke": [
        "tell me a joke", "make me laugh", "do you know any good jokes", "say something funny",
        "tell me a {topic} joke",
    ],
    "account_security": [
        "my pin code is {pin}", "change my pin to {pin}", "set my security code to {pin}",
        "the code for the door is {pin}", "update my passcode to {pin}",
    ],
}

SLOT_VALUES: dict[str, list[str]] = {
    "song": ["yesterday", "hello", "imagine", "thunder", "bad guy", "halo", "let it be", "hurt"],
    "artist": ["adele", "the beatles", "queen", "drake", "beyonce", "coldplay", "rihanna", "eminem"],
    "genre": ["jazz", "rock", "classical", "pop", "country", "hip hop", "blues"],
    "room": ["kitchen", "bedroom", "living room", "bathroom", "office", "garage"],
    "city": ["boston", "seattle", "london", "paris", "tokyo", "berlin", "chicago", "madrid"],
    "date": ["today", "tomorrow", "tonight", "this weekend", "on monday", "on friday"],
    "time": ["six am", "seven thirty", "noon", "eight pm", "five fifteen", "midnight"],
    "duration": ["five minutes", "ten minutes", "one hour", "thirty seconds", "twenty minutes"],
    "degrees": ["sixty eight", "seventy", "twenty one", "nineteen", "seventy two"],
    "item": ["milk", "eggs", "bread", "coffee", "paper towels", "batteries", "apples", "rice"],
    "contact": ["mom", "dad", "alex", "sam", "jordan", "the office", "grandma", "taylor"],
    "topic": ["sports", "tech", "science", "business", "political", "animal"],
    "team": ["lakers", "yankees", "patriots", "warriors", "red sox", "bulls"],
    "dish": ["lasagna", "pancakes", "banana bread", "curry", "chili", "pad thai"],
    "phrase": ["thank you", "good morning", "where is the station", "i love you", "how much"],
    "language": ["spanish", "french", "german", "italian", "japanese"],
    "pin": list("0123456789"),  # a PIN is four draws, one digit each
}

#: Word substitutions used by speakers of the minority dialect (lexical variation, applied per word).
DIALECT_VARIANTS: dict[str, str] = {
    "play": "stick on", "turn": "flip", "lights": "lamps", "music": "tunes", "weather": "forecast",
    "alarm": "wake up call", "timer": "clock", "message": "note", "call": "bell", "news": "bulletin",
    "list": "note", "order": "fetch", "volume": "sound", "louder": "up a notch", "quieter": "down a notch",
    "make": "get", "what": "whit", "how": "hoo", "please": "pal", "the": "tha", "set": "pit",
}

#: Speaker attributes (protected groups) and their population shares.
SPEAKER_ATTRIBUTES: dict[str, dict[str, float]] = {
    "gender": {"female": 0.5, "male": 0.5},
    "age_group": {"18-34": 0.4, "35-64": 0.45, "65+": 0.15},
    "dialect": {"majority": 0.85, "minority": 0.15},
}
